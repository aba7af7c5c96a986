"""Real Debian images for the selftests, made locally and cached between test runs.

There is no image registry, so everything starts from `debootstrap`:

* ``rp-cache/debian-base:<codename>``: ``debootstrap --variant=minbase <codename>`` (the
  release this machine runs, from /etc/os-release), ``docker import``ed. Its apt sources are
  the ones debootstrap wrote, so ``apt-get`` works in images built FROM it.
* ``rp-cache/postgres:<codename>``: Debian's ``postgresql`` FROM the base, run as ``postgres``
  in the foreground. User ``app``, password ``app``, database ``app``, port 5432; see
  selftests/images/postgres/.
* ``rp-cache/python-app:<codename>``: Debian's ``python3`` and ``python3-psycopg2`` FROM the
  base. Tests build their app FROM it (selftests/images/app/app.py, see ``APP_PY``).

An image is built only when its tag is absent or its recipe changed: every image carries
``CACHE_LABEL=1`` and ``HASH_LABEL=<hash>``, the hash of its recipe (for the base: the
codename and this module's rootfs tweaks; for the others: every file of their directory
under selftests/images/ and the id of the base they were built FROM). A rebuilt image takes
the tag; the image it replaced is removed by id when nothing uses it any more.

The images never carry the per-run selftest label, so no run's cleanup removes them. Images
built FROM them inherit both cache labels: select cached images by exact name, never by
CACHE_LABEL alone. Two processes may ask at once: builds run under an exclusive
``fcntl.flock`` on ``LOCK_PATH``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
from docker.models.images import Image

log = logging.getLogger(__name__)

CACHE_LABEL = "io.release-phases.selftest-cache"
HASH_LABEL = "io.release-phases.selftest-cache.hash"
REPOSITORY_PREFIX = "rp-cache"
IMAGES_DIR = Path(__file__).resolve().parents[1] / "images"
#: The selftests' web app; copy it next to a Dockerfile FROM the python-app image.
APP_PY = IMAGES_DIR / "app" / "app.py"
#: The same file for every process, whatever its TMPDIR.
LOCK_PATH = Path("/tmp/rp-selftest-cache-images.lock")
OS_RELEASE = Path("/etc/os-release")
INSTALL_HINT = "debootstrap is needed to make the Debian test images: apt-get install debootstrap"

#: Built FROM the base: the name of the image is the name of its directory under IMAGES_DIR.
DERIVED = ("postgres", "python-app")

#: Bump when the base is made differently in a way the constants below do not show.
BASE_REVISION = 1
#: Written into the debootstrapped tree before it is imported (part of the base's hash).
BASE_FILES = {
    # No man pages, docs or translations in anything installed later (as Debian's slim images).
    "etc/dpkg/dpkg.cfg.d/01-selftest-slim": (
        "path-exclude /usr/share/doc/*\n"
        "path-include /usr/share/doc/*/copyright\n"
        "path-exclude /usr/share/man/*\n"
        "path-exclude /usr/share/info/*\n"
        "path-exclude /usr/share/locale/*\n"
        "path-include /usr/share/locale/locale.alias\n"
    ),
    # No downloaded .debs or package caches left in any image layer (as Debian's images).
    "etc/apt/apt.conf.d/docker-clean": (
        'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb'
        ' /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };\n'
        'APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb'
        ' /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };\n'
        'Dir::Cache::pkgcache "";\n'
        'Dir::Cache::srcpkgcache "";\n'
    ),
    # Packages must not start services while an image is built.
    "usr/sbin/policy-rc.d": "#!/bin/sh\nexit 101\n",
}
#: Files removed from the debootstrapped tree: debootstrap's package lists and caches...
BASE_PRUNE = ("var/lib/apt/lists", "var/cache/apt")
#: ...and what the dpkg excludes above keep out of later packages (copyrights stay).
BASE_SLIM = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale")
BASE_KEEP = ("usr/share/doc/*/copyright", "usr/share/locale/locale.alias")
BASE_CHANGES = ("ENV LANG=C.UTF-8", 'CMD ["bash"]')
BUILD_TIMEOUT = 1800.0


class DebootstrapMissing(RuntimeError):
    """debootstrap is not installed; the message says how to install it."""


class ImageBuildError(RuntimeError):
    """A step of making an image failed; the message ends with the step's output."""


@dataclass(frozen=True)
class DebianImages:
    """References (repository:tag) of the three cached images."""

    codename: str
    base: str
    postgres: str
    python_app: str


def os_codename(os_release: Path = OS_RELEASE) -> str:
    """VERSION_CODENAME from /etc/os-release: the Debian release this machine runs."""
    for line in os_release.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "VERSION_CODENAME" and value.strip().strip("\"'"):
            return value.strip().strip("\"'")
    raise ImageBuildError(f"no VERSION_CODENAME in {os_release}")


def image_ref(name: str, codename: str | None = None) -> str:
    """``rp-cache/<name>:<codename>``; name is ``debian-base``, ``postgres`` or ``python-app``."""
    return f"{REPOSITORY_PREFIX}/{name}:{codename or os_codename()}"


def base_image(client: docker.DockerClient, codename: str | None = None) -> str:
    """The Debian base image, built (debootstrap + import) when absent or stale."""
    return _ensure(client, ("debian-base",), codename or os_codename())[0]


def postgres_image(client: docker.DockerClient, codename: str | None = None) -> str:
    """The PostgreSQL image (and the base under it), built when absent or stale."""
    return _ensure(client, ("postgres",), codename or os_codename())[0]


def python_app_image(client: docker.DockerClient, codename: str | None = None) -> str:
    """The Python app base image (and the base under it), built when absent or stale."""
    return _ensure(client, ("python-app",), codename or os_codename())[0]


def ensure_images(client: docker.DockerClient, codename: str | None = None) -> DebianImages:
    """All three images, each built only when absent or stale (in one pass, under one lock)."""
    codename = codename or os_codename()
    base, postgres, python_app = _ensure(client, ("debian-base", *DERIVED), codename)
    return DebianImages(codename=codename, base=base, postgres=postgres, python_app=python_app)


# -- how up to date an image is --------------------------------------------------------


def _base_hash(codename: str) -> str:
    h = hashlib.sha256(f"debootstrap --variant=minbase {codename} {BASE_REVISION}\n".encode())
    for path, text in sorted(BASE_FILES.items()):
        h.update(f"{path}\n{text}\n".encode())
    h.update("\n".join((*BASE_PRUNE, *BASE_SLIM, *BASE_KEEP, *BASE_CHANGES)).encode())
    return h.hexdigest()[:16]


def _context_hash(name: str, base_id: str) -> str:
    h = hashlib.sha256(f"FROM {base_id}\n".encode())
    context = IMAGES_DIR / name
    for path in sorted(p for p in context.rglob("*") if p.is_file()):
        h.update(f"{path.relative_to(context)}\n".encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _image(client: docker.DockerClient, ref: str) -> Image | None:
    try:
        return client.images.get(ref)
    except docker.errors.ImageNotFound:
        return None


def _wanted_hash(client: docker.DockerClient, name: str, codename: str) -> str | None:
    """The hash `name` must carry; None when the base it builds FROM is missing."""
    if name == "debian-base":
        return _base_hash(codename)
    base = _image(client, image_ref("debian-base", codename))
    return None if base is None else _context_hash(name, base.id)


def _is_current(client: docker.DockerClient, name: str, codename: str) -> bool:
    image = _image(client, image_ref(name, codename))
    wanted = _wanted_hash(client, name, codename)
    return image is not None and wanted is not None and image.labels.get(HASH_LABEL) == wanted


# -- building ----------------------------------------------------------------------------


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    with open(LOCK_PATH, "a") as fh:
        started = time.monotonic()
        fcntl.flock(fh, fcntl.LOCK_EX)
        waited = time.monotonic() - started
        if waited > 1:
            log.info("waited %.1fs for %s (another process was building)", waited, LOCK_PATH)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _ensure(client: docker.DockerClient, names: tuple[str, ...], codename: str) -> list[str]:
    """Build what is stale among the base and `names`; the refs of `names`, in order."""
    wanted = ["debian-base", *(n for n in names if n != "debian-base")]
    refs = [image_ref(name, codename) for name in names]
    if all(_is_current(client, name, codename) for name in wanted):
        return refs
    with _build_lock():
        # Checked again under the lock: another process may have built them meanwhile.
        replaced: list[str] = []
        for name in wanted:
            _build_if_stale(client, name, codename, replaced)
        # Newest first: a replaced base stays while images built FROM it remain.
        for old in reversed(replaced):
            _remove_replaced(client, old)
    return refs


def _build_if_stale(
    client: docker.DockerClient, name: str, codename: str, replaced: list[str]
) -> None:
    if _is_current(client, name, codename):
        return
    ref = image_ref(name, codename)
    old = _image(client, ref)
    wanted = _wanted_hash(client, name, codename)
    assert wanted is not None, "the base is built before what is built FROM it"
    labels = (f"{CACHE_LABEL}=1", f"{HASH_LABEL}={wanted}")
    why = "absent" if old is None else f"stale (hash {old.labels.get(HASH_LABEL)} != {wanted})"
    log.info("building %s: %s", ref, why)
    started = time.monotonic()
    if name == "debian-base":
        _debootstrap_import(codename, ref, labels)
    else:
        _docker_build(name, codename, ref, labels)
    new = client.images.get(ref)
    log.info(
        "built %s in %.0fs: %s, %.0f MB",
        ref,
        time.monotonic() - started,
        new.short_id,
        new.attrs.get("Size", 0) / 1e6,
    )
    if old is not None and old.id != new.id:
        replaced.append(old.id)


def _remove_replaced(client: docker.DockerClient, image_id: str) -> None:
    """Remove an image this module made and has since replaced; keep it if still in use."""
    try:
        client.images.remove(image_id, noprune=False)
        log.info("removed replaced image %s", image_id)
    except docker.errors.APIError as exc:
        log.info("kept replaced image %s: %s", image_id, exc.explanation or exc)


def _run(argv: list[str], what: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    if done.returncode != 0:
        output = _tail(done.stdout + done.stderr)
        raise ImageBuildError(f"{what} failed ({done.returncode}): {' '.join(argv)}\n{output}")
    return done


def _tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _debootstrap_import(codename: str, ref: str, labels: tuple[str, ...]) -> None:
    debootstrap = shutil.which("debootstrap") or shutil.which("/usr/sbin/debootstrap")
    if debootstrap is None:
        raise DebootstrapMissing(INSTALL_HINT)
    if os.geteuid() != 0:
        raise ImageBuildError("debootstrap needs root to make the Debian base image")
    tmp = Path(tempfile.mkdtemp(prefix="rp-debootstrap-"))
    try:
        root = tmp / "rootfs"
        try:
            _run([debootstrap, "--variant=minbase", codename, str(root)], "debootstrap")
        except ImageBuildError as exc:
            detail = root / "debootstrap" / "debootstrap.log"
            if detail.exists():
                raise ImageBuildError(f"{exc}\n{detail}:\n{_tail(detail.read_text())}") from exc
            raise
        _prune(root)
        for rel, text in BASE_FILES.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            path.chmod(0o755 if text.startswith("#!") else 0o644)
        changes = [f"LABEL {label}" for label in labels] + list(BASE_CHANGES)
        _import(root, ref, changes)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _prune(root: Path) -> None:
    for rel in BASE_PRUNE:
        for path in (root / rel).rglob("*"):
            if path.is_file() and path.name != "lock":
                path.unlink()
    for rel in BASE_SLIM:
        # Deepest first, so that a directory is empty by the time it is looked at.
        for path in sorted((root / rel).rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if any(path.relative_to(root).match(keep) for keep in BASE_KEEP):
                continue
            if path.is_symlink() or path.is_file():
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()


def _import(root: Path, ref: str, changes: list[str]) -> None:
    """`tar -C root -c . | docker import --change ... - ref`."""
    argv = ["docker", "import", *(a for c in changes for a in ("--change", c)), "-", ref]
    tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
    assert tar.stdout is not None
    try:
        imp = subprocess.Popen(
            argv, stdin=tar.stdout, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        tar.stdout.close()  # only `docker import` reads the pipe now: tar sees it end
        out, _ = imp.communicate(timeout=BUILD_TIMEOUT)
    finally:
        tar.wait(timeout=60)
    if imp.returncode != 0 or tar.returncode != 0:
        raise ImageBuildError(
            f"tar ({tar.returncode}) | {' '.join(argv)} ({imp.returncode}) failed\n{_tail(out)}"
        )


def _docker_build(name: str, codename: str, ref: str, labels: tuple[str, ...]) -> None:
    argv = ["docker", "build", "--force-rm", "--tag", ref]
    argv += ["--build-arg", f"BASE={image_ref('debian-base', codename)}"]
    for label in labels:
        argv += ["--label", label]
    done = _run([*argv, str(IMAGES_DIR / name)], f"docker build of {ref}")
    log.debug("docker build of %s:\n%s", ref, _tail(done.stdout + done.stderr, 200))
