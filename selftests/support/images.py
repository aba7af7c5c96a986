"""Local test images: a static busybox serving /health with `busybox httpd`.

There is no registry here, so every image is made with `docker import` from a
tar built in memory. Images carry LABEL so cleanup can find exactly what the
selftests made and nothing else.
"""

from __future__ import annotations

import io
import shutil
import tarfile
from dataclasses import dataclass

import docker

LABEL = "io.release-phases.selftest"
BUSYBOX_CANDIDATES = ("/usr/bin/busybox", "/bin/busybox")
HTTP_PORT = 8080

#: The health endpoint is a CGI script, so one path can answer 200 or 500.
HEALTH_PATH = "/cgi-bin/health"


def _cgi(status: str, body: str, log: str = "") -> str:
    """The health script; `log` goes to its stderr, which is the container's log."""
    return (
        "#!/bin/sh\n"
        + (f'echo "{log}" >&2\n' if log else "")
        + f'printf "HTTP/1.0 {status}\\r\\nContent-Type: text/plain\\r\\n\\r\\n{body}\\n"\n'
    )


def busybox_path() -> str:
    for path in BUSYBOX_CANDIDATES:
        found = shutil.which(path)
        if found:
            with open(found, "rb") as fh:
                head = fh.read(4096)
            # A dynamically linked busybox would not run in an empty image.
            if b"ld-linux" not in head:
                return found
    raise RuntimeError("a static busybox is needed: apt-get install busybox-static")


@dataclass(frozen=True)
class ImageSpec:
    """What the image's /health does: 'ok' (200), 'error' (500), 'silent' (no server) or
    'crash' (the container exits 3 at once). 'bare' is another kind of image: its one
    file is the static busybox at /busybox, serving /data with httpd; no shell, rm or
    tar is on any path, so nothing can be run in it but that binary."""

    repository: str
    tag: str
    health: str = "ok"

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.tag}"


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))


def _dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    tar.addfile(info)


def rootfs(spec: ImageSpec) -> bytes:
    buf = io.BytesIO()
    if spec.health == "bare":
        with tarfile.open(fileobj=buf, mode="w") as tar, open(busybox_path(), "rb") as fh:
            _add(tar, "busybox", fh.read(), 0o755)
        return buf.getvalue()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "tmp", "data", "www", "www/cgi-bin"):
            _dir(tar, d)
        with open(busybox_path(), "rb") as fh:
            _add(tar, "bin/busybox", fh.read(), 0o755)
        for applet in ("sh", "cat", "echo", "sleep", "ls", "tar", "rm", "mkdir"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
        _add(tar, "www/version", f"{spec.tag}\n".encode())
        if spec.health == "ok":
            cgi = _cgi("200 OK", f"ok {spec.repository}:{spec.tag}")
            _add(tar, "www/cgi-bin/health", cgi.encode(), 0o755)
        elif spec.health == "error":
            cgi = _cgi("500 Internal Server Error", "broken", "health check failed: broken")
            _add(tar, "www/cgi-bin/health", cgi.encode(), 0o755)
    return buf.getvalue()


def build(client: docker.DockerClient, spec: ImageSpec, run_label: str) -> str:
    """Import the image and return its id."""
    if spec.health == "silent":
        cmd = '["/bin/busybox","sleep","100000"]'
    elif spec.health == "bare":
        cmd = f'["/busybox","httpd","-f","-p","{HTTP_PORT}","-h","/data"]'
    elif spec.health == "crash":
        cmd = '["/bin/busybox","sh","-c","echo crashing at start >&2; exit 3"]'
    else:
        cmd = f'["/bin/busybox","httpd","-f","-p","{HTTP_PORT}","-h","/www"]'
    changes = [f"CMD {cmd}", f"LABEL {LABEL}={run_label}"]
    if spec.health == "bare":
        # Two tags of the same one file would be one image: the tag tells them apart.
        changes.append(f"ENV IMAGE_TAG={spec.tag}")
    client.api.import_image_from_data(
        rootfs(spec), repository=spec.repository, tag=spec.tag, changes=changes
    )
    return client.images.get(spec.ref).id
