"""The demo's images, made with `docker import` from a tar built here: no registry.

Each holds a static busybox with every applet linked under /bin, and the few files
of its service: a web app (busybox httpd with a /health CGI), a worker (a loop that
leaves a heartbeat file) and a database (records in a file under /data, a volume,
served over http). Version 2 of the database changes the records' format when it
starts, as many applications migrate their data at boot; the demo's revert then
has something real to bring back.

Every image carries the demo's label, so `--clean` finds exactly these, and a
digest of its content, so a rerun imports only what changed.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import docker

from release_phases.demo.layout import DIGEST_LABEL, LABEL, SEED_RECORDS, Layout
from release_phases.host.shell import Runner

PORT = 8080
HEALTH_PATH = "/cgi-bin/health"
RECORDS_PATH = "/cgi-bin/records"


def _http(status: str, body: str) -> str:
    """Shell that prints a CGI answer."""
    return f"printf 'HTTP/1.0 {status}\\r\\nContent-Type: text/plain\\r\\n\\r\\n%s\\n' \"{body}\"\n"


def _web_files(tag: str, broken: bool) -> dict[str, str]:
    if broken:
        health = (
            "#!/bin/sh\n"
            f'echo "web {tag}: health check failed: cannot reach its configuration" >&2\n'
            + _http("500 Internal Server Error", f"broken web {tag}")
        )
    else:
        health = "#!/bin/sh\n" + _http("200 OK", f"ok web {tag}")
    return {
        "www/index.html": f"<h1>release-phases demo: web, version {tag}</h1>\n",
        "www/cgi-bin/health": health,
    }


#: The seed records as a printf format: each newline written as `\n`.
_SEED_PRINTF = SEED_RECORDS.replace("\n", "\\n")

_DB_START = {
    "1": f"""#!/bin/sh
# Version 1 of the demo database: one record per line, "id,name".
set -e
if [ ! -f /data/records.csv ]; then
    printf '{_SEED_PRINTF}' > /data/records.csv
    echo 1 > /data/schema
    echo "db 1: new database, $(wc -l < /data/records.csv) records" >&2
fi
exec httpd -f -p {PORT} -h /www
""",
    "2": f"""#!/bin/sh
# Version 2 of the demo database: "id,name,email". A database of version 1 is
# migrated when it starts: every record gets an (empty) email column.
set -e
if [ ! -f /data/records.csv ]; then
    printf '{_SEED_PRINTF}' > /data/records.csv
    echo 1 > /data/schema
fi
if [ "$(cat /data/schema)" = 1 ]; then
    sed 's/$/,/' /data/records.csv > /data/records.new
    mv /data/records.new /data/records.csv
    echo 2 > /data/schema
    echo "db 2: migrated the records to schema 2 (id,name,email)" >&2
fi
exec httpd -f -p {PORT} -h /www
""",
}


def _db_files(tag: str) -> dict[str, str]:
    health = f"""#!/bin/sh
# Healthy when the data is in this version's schema.
schema=$(cat /data/schema 2>/dev/null || echo none)
if [ "$schema" = {tag} ]; then
    {_http("200 OK", f"ok db {tag}: schema $schema")}else
    echo "db {tag}: the data is in schema $schema, this version needs {tag}" >&2
    {_http("500 Internal Server Error", f"db {tag}: schema $schema")}fi
"""
    records = "#!/bin/sh\n" + (
        "printf 'HTTP/1.0 200 OK\\r\\nContent-Type: text/plain\\r\\n\\r\\n'\n"
        "cat /data/records.csv\n"
    )
    return {
        "app/start.sh": _DB_START[tag],
        "www/cgi-bin/health": health,
        "www/cgi-bin/records": records,
    }


@dataclass(frozen=True)
class ImageSpec:
    service: str
    tag: str
    files: dict[str, str]
    cmd: tuple[str, ...]


def specs() -> list[ImageSpec]:
    """Every image the demo uses: web 1, 2 and a broken 2; db 1 and 2; worker 1."""
    httpd = ("/bin/busybox", "httpd", "-f", "-p", str(PORT), "-h", "/www")
    heartbeat = "while :; do date > /tmp/heartbeat; sleep 2; done"
    return [
        ImageSpec("web", "1", _web_files("1", broken=False), httpd),
        ImageSpec("web", "2", _web_files("2", broken=False), httpd),
        ImageSpec("web", "2-broken", _web_files("2", broken=True), httpd),
        ImageSpec("db", "1", _db_files("1"), ("/bin/sh", "/app/start.sh")),
        ImageSpec("db", "2", _db_files("2"), ("/bin/sh", "/app/start.sh")),
        ImageSpec("worker", "1", {}, ("/bin/sh", "-c", heartbeat)),
    ]


def applets(busybox: Path, runner: Runner) -> list[str]:
    """The applets this busybox has (`busybox --list`), linked under /bin in each image."""
    listed = runner.run([str(busybox), "--list"]).output.split()
    return sorted(a for a in listed if "/" not in a and a != "busybox")


def rootfs(spec: ImageSpec, busybox: bytes, applet_names: list[str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        dirs = {"bin", "tmp", "data", "www", "www/cgi-bin"}
        dirs |= {str(Path(name).parent) for name in spec.files}
        for d in sorted(dirs):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        _add(tar, "bin/busybox", busybox, 0o755)
        for name in applet_names:
            link = tarfile.TarInfo(f"bin/{name}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
        for name, text in sorted(spec.files.items()):
            executable = name.startswith("www/cgi-bin/") or name.endswith(".sh")
            _add(tar, name, text.encode(), 0o755 if executable else 0o644)
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))


def build_all(
    client: docker.DockerClient, layout: Layout, busybox: Path, runner: Runner
) -> list[str]:
    """Import every image that is missing or whose content changed; the refs imported."""
    binary = busybox.read_bytes()
    names = applets(busybox, runner)
    imported = []
    for spec in specs():
        data = rootfs(spec, binary, names)
        changes = [
            f"CMD {json.dumps(list(spec.cmd))}",
            "ENV PATH=/bin",
            f"LABEL {LABEL}={layout.name}",
        ]
        digest = hashlib.sha256(data + "\n".join(changes).encode()).hexdigest()[:16]
        changes.append(f"LABEL {DIGEST_LABEL}={digest}")
        ref = layout.image(spec.service, spec.tag)
        try:
            current = client.images.get(ref).labels.get(DIGEST_LABEL)
        except docker.errors.ImageNotFound:
            current = None
        if current == digest:
            continue
        client.api.import_image_from_data(
            data, repository=layout.repository(spec.service), tag=spec.tag, changes=changes
        )
        imported.append(ref)
    return imported
