"""Backups against a real Docker Engine: take, verify, restore and undo.

A service is brought up with `docker compose`, data is written into its named
volume and into a path of its container, and the restored bytes are compared with
what was written. Every compose project started here is taken down with -v.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import json
import re
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import docker.errors
import pytest
import yaml

from release_phases import atomic
from release_phases.backup import BackupRecord, Restore, RestoreReport, compare, take, verify
from release_phases.backup.deployed import VOLUME_MOUNT, Deployed, helper
from release_phases.errors import ReleaseError
from release_phases.host import Host, engine
from release_phases.host import compose as compose_cli
from release_phases.host.compose import Compose, ComposeProject
from release_phases.host.shell import CommandFailed, Runner, render
from release_phases.manifest import Backup, Dump, Health, Image, Manifest, load
from selftests.support.deployrepo import DeployRepo, Service
from selftests.support.images import LABEL
from selftests.support.scenario import container

BINARY = bytes(range(256)) * 4


def project(svc: Service, manifest: Manifest) -> ComposeProject:
    return ComposeProject(
        compose_cli.detect(), svc.project, manifest.compose_file, manifest.containers
    )


def compose(svc: Service, manifest: Manifest, *args: str) -> None:
    argv = project(svc, manifest).argv(*args)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{' '.join(argv)}:\n{done.stdout}{done.stderr}"


def restore(
    host: Host, svc: Service, manifest: Manifest, root: Path, stamp: str, *, create: bool = True
) -> RestoreReport:
    """What a revert does between its stop and its start: the volumes go back, the
    containers are created (not started), then the paths go back."""
    restoring = Restore(host, manifest, project(svc, manifest), root, stamp)
    restoring.preflight()
    restoring.volumes()
    if create:
        compose(svc, manifest, "up", "--no-start")
    return restoring.paths()


class Box:
    """The service's running container, read and written through `docker exec`."""

    def __init__(self, client: docker.DockerClient, svc: Service) -> None:
        self.client = client
        self.svc = svc

    @property
    def container(self):
        return container(self.client, self.svc)

    def sh(self, script: str) -> bytes:
        code, out = self.container.exec_run(["sh", "-c", script])
        assert code == 0, out
        return out

    def write(self, path: str, data: bytes) -> None:
        octal = "".join(f"\\{b:03o}" for b in data)
        self.sh(f"mkdir -p $(dirname {path}) && printf '{octal}' > {path}")

    def read(self, path: str) -> bytes:
        return self.sh(f"cat {path}")

    def names(self, directory: str) -> set[str]:
        return set(self.sh(f"ls -A {directory}").decode().split())


@pytest.fixture
def up(
    deploy: DeployRepo, docker_client: docker.DockerClient, request: pytest.FixtureRequest
) -> Callable[..., tuple[Manifest, Box]]:
    """Write a service to the deploy repo, bring it up, and take it down -v afterwards."""

    def up(svc: Service, *, extra_manifest: dict | None = None) -> tuple[Manifest, Box]:
        deploy.write_service(svc, extra_manifest=extra_manifest)
        manifest = load(deploy.dev, svc.name)
        request.addfinalizer(lambda: compose(svc, manifest, "down", "-v", "--remove-orphans"))
        compose(svc, manifest, "up", "-d")
        return manifest, Box(docker_client, svc)

    return up


@pytest.fixture
def root(deploy: DeployRepo) -> Path:
    return deploy.dev / ".asd" / "workspace" / "backups"


@pytest.fixture
def host(deploy: DeployRepo) -> Host:
    return Host(deploy.dev)


@pytest.fixture
def volumes(docker_client: docker.DockerClient) -> Iterator[Callable[[str], None]]:
    """Create volumes by hand (as `external` ones would be); removed afterwards."""
    made: list[str] = []

    def create(name: str) -> None:
        docker_client.volumes.create(name=name, labels={LABEL: "test_backup"})
        made.append(name)

    yield create
    for name in made:
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.volumes.get(name).remove(force=True)


def up_on_external(
    deploy: DeployRepo, svc: Service, name: str, request: pytest.FixtureRequest
) -> Manifest:
    """Write `svc` mounting the external volume `name` at /data/<svc>, backing it up, and
    bring it up (taken down afterwards)."""
    deploy.write_service(svc, extra_manifest={"backup": {"volumes": [name]}})
    compose_file = deploy.dev / "packages" / svc.name / "compose.yaml"
    spec = yaml.safe_load(compose_file.read_text())
    spec["services"][svc.name]["volumes"] = [f"{name}:/data/{svc.name}"]
    spec["volumes"] = {name: {"external": True}}
    compose_file.write_text(yaml.safe_dump(spec))
    manifest = load(deploy.dev, svc.name)
    request.addfinalizer(lambda: compose(svc, manifest, "down"))
    compose(svc, manifest, "up", "-d")
    return manifest


def members(record: BackupRecord, kind: str) -> set[str]:
    (entry,) = [e for e in record.entries if e.kind == kind]
    assert entry.archive is not None
    with tarfile.open(record.directory / entry.archive) as tar:
        return {m.name.split("/", 1)[1] for m in tar if "/" in m.name}


@pytest.mark.docker
def test_restore_puts_back_volume_and_path_byte_identical(
    up, make_service, host, root: Path
) -> None:
    svc = make_service("web", volumes=("web-data",), paths=("/srv/data",))
    manifest, web = up(svc)
    web.write("/data/web-data/a.txt", b"alpha\n")
    web.write("/data/web-data/sub/b.bin", BINARY)
    web.write("/data/web-data/.hidden", b"dot\n")
    web.write("/srv/data/config", b"v1\n")
    web.write("/srv/data/sub/c", b"see\n")

    record = take(host, manifest, project(svc, manifest), root)

    assert re.fullmatch(r"\d{8}_\d{6}", record.stamp)
    assert record.directory == root / "web" / record.stamp
    assert [(e.kind, e.name, e.target, e.absent) for e in record.entries] == [
        ("volume", "web-data", f"{svc.project}_web-data", False),
        ("path", "/srv/data", "/srv/data", False),
    ]
    checked = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"], cwd=record.directory, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count(": OK") == 2
    on_disk = json.loads((record.directory / "record.json").read_text())
    assert [e["sha256"] for e in on_disk["entries"]] == [e.sha256 for e in record.entries]
    assert members(record, "volume") >= {"a.txt", "sub/b.bin", ".hidden"}

    web.write("/data/web-data/a.txt", b"changed\n")
    web.write("/data/web-data/new.txt", b"added after the backup\n")
    web.sh("rm /data/web-data/.hidden")
    web.write("/srv/data/config", b"v2\n")
    web.write("/srv/data/extra", b"added after the backup\n")
    web.sh("rm /srv/data/sub/c")

    with pytest.raises(ReleaseError, match="still running") as refused:
        Restore(host, manifest, project(svc, manifest), root, record.stamp).volumes()
    # The next command is the detected Compose's, for exactly this project.
    stop = render(project(svc, manifest).argv("stop"))
    assert refused.value.next_command == f"stop them first: {stop}"
    assert web.read("/data/web-data/a.txt") == b"changed\n"

    compose(svc, manifest, "stop")
    report = restore(host, svc, manifest, root, record.stamp)
    compose(svc, manifest, "start")

    assert web.names("/data/web-data") == {"a.txt", "sub", ".hidden"}
    assert web.read("/data/web-data/a.txt") == b"alpha\n"
    assert web.read("/data/web-data/sub/b.bin") == BINARY
    assert web.read("/data/web-data/.hidden") == b"dot\n"
    assert web.names("/srv/data") == {"config", "sub"}
    assert web.read("/srv/data/config") == b"v1\n"
    assert web.read("/srv/data/sub/c") == b"see\n"
    removed, volume, path = report.actions
    assert removed.startswith("removed the stopped containers holding its volumes:")
    assert "removed and created again, restored from" in volume
    assert volume.endswith(compare.BYTE_FOR_BYTE)
    assert "/srv/data: replaced in" in path
    assert path.endswith(compare.MEMBER_BY_MEMBER)

    # What stood there was kept as a backup of its own: restoring it undoes the revert.
    assert report.replaced.directory.parent == record.directory
    verify(root, "web", report.undo_stamp)
    assert "new.txt" in members(report.replaced, "volume")
    compose(svc, manifest, "stop")
    restore(host, svc, manifest, root, report.undo_stamp)
    compose(svc, manifest, "start")
    assert web.read("/data/web-data/new.txt") == b"added after the backup\n"
    assert web.read("/srv/data/config") == b"v2\n"
    assert web.names("/srv/data") == {"config", "extra", "sub"}


@pytest.mark.docker
def test_an_external_volume_is_restored_and_stays_one_made_by_hand(
    deploy, make_service, docker_client, host, volumes, root: Path, request
) -> None:
    svc = make_service("ext")
    name = f"{svc.project}-shared"
    volumes(name)  # by hand, as an operator makes an external volume
    made = docker_client.volumes.get(name).attrs
    manifest = up_on_external(deploy, svc, name, request)
    ext = Box(docker_client, svc)
    ext.write("/data/ext/kept", BINARY)
    record = take(host, manifest, project(svc, manifest), root)
    ext.write("/data/ext/later", b"added after the backup\n")

    compose(svc, manifest, "stop")
    report = restore(host, svc, manifest, root, record.stamp)
    compose(svc, manifest, "start")

    assert ext.names("/data/ext") == {"kept"}
    assert ext.read("/data/ext/kept") == BINARY
    again = docker_client.volumes.get(name).attrs
    assert (again["Labels"], again["Driver"], again["Options"]) == (
        made["Labels"],
        made["Driver"],
        made["Options"],
    )
    assert f"volume {name}: removed and created again" in "\n".join(report.actions)


@pytest.mark.docker
@pytest.mark.reliability("fault", "a one-off `compose run` container holds the volume to restore")
def test_a_one_off_container_holding_the_volume_is_refused_while_the_service_runs(
    up, make_service, docker_client, host, root: Path
) -> None:
    svc = make_service("web", volumes=("web-data",))
    manifest, _ = up(svc)
    record = take(host, manifest, project(svc, manifest), root)
    # `compose stop` would leave this one running, holding the volume.
    compose(svc, manifest, "run", "-d", "--name", f"{svc.project}-oneoff", "web")
    restoring = Restore(host, manifest, project(svc, manifest), root, record.stamp)

    with pytest.raises(ReleaseError, match=f"also held by {svc.project}-oneoff,") as refused:
        restoring.preflight()
    assert f"`docker rm -f {svc.project}-oneoff`" in refused.value.next_command
    subprocess.run(["docker", "rm", "-f", f"{svc.project}-oneoff"], check=True, capture_output=True)
    (line,) = restoring.preflight()
    assert line.startswith(
        f"volume web-data ({svc.project}_web-data): held by {svc.project}-web-1;"
    )


@pytest.mark.docker
def test_restore_recreates_a_volume_no_container_holds(
    up, make_service, docker_client, host, root: Path
) -> None:
    svc = make_service("store", volumes=("blobs",))
    manifest, store = up(svc)
    store.write("/data/blobs/one", BINARY)
    record = take(host, manifest, project(svc, manifest), root)
    store.write("/data/blobs/two", b"later\n")
    labels = docker_client.volumes.get(f"{svc.project}_blobs").attrs["Labels"]

    compose(svc, manifest, "down")  # containers go, the volume stays
    report = restore(host, svc, manifest, root, record.stamp, create=False)
    assert report.actions == (
        f"volume blobs ({svc.project}_blobs): removed and created again,"
        f" restored from {record.entries[0].archive} and flushed to disk;"
        f" {compare.BYTE_FOR_BYTE}",
    )
    assert docker_client.volumes.get(f"{svc.project}_blobs").attrs["Labels"] == labels

    compose(svc, manifest, "up", "-d")
    assert store.names("/data/blobs") == {"one"}
    assert store.read("/data/blobs/one") == BINARY


def test_nothing_declared_gets_an_empty_record(tmp_path: Path) -> None:
    class NoDocker:
        def __getattr__(self, name: str):
            raise AssertionError(f"an empty backup asked Docker for {name}")

    manifest = Manifest(
        service="quiet",
        package_dir=tmp_path,
        image=Image("quiet", "1"),
        health=Health("http://127.0.0.1:1/health"),
        containers=("quiet",),
        compose_file=tmp_path / "compose.yaml",
        backup=Backup(),
    )
    root = tmp_path / "backups"
    # Data only: nothing here runs Compose, so no Compose need be installed.
    compose_v2 = Compose(prefix=("docker", "compose"), version="2.40.3")
    quiet = ComposeProject(compose_v2, "proj", manifest.compose_file, manifest.containers)

    host = Host(tmp_path)
    host.engine = NoDocker()  # type: ignore[assignment]
    record = take(host, manifest, quiet, root)

    assert record.nothing_declared
    assert record.directory == root / "quiet" / record.stamp
    on_disk = json.loads((record.directory / "record.json").read_text())
    assert on_disk["nothing_declared"] is True
    assert on_disk["project"] == "proj"
    assert on_disk["entries"] == []
    assert (record.directory / "SHA256SUMS").read_text() == ""
    assert verify(root, "quiet", record.stamp) == record


@pytest.mark.docker
def test_a_corrupted_archive_fails_verify_naming_it(
    deploy, make_service, host, volumes, root: Path
) -> None:
    svc = make_service("files", volumes=("data",))
    deploy.write_service(svc)
    manifest = load(deploy.dev, svc.name)
    volumes(f"{svc.project}_data")
    record = take(host, manifest, project(svc, manifest), root)
    (entry,) = record.entries
    assert entry.archive is not None
    archive = record.directory / entry.archive
    data = bytearray(archive.read_bytes())
    data[100] ^= 0xFF
    archive.write_bytes(bytes(data))

    with pytest.raises(ReleaseError, match=re.escape(entry.archive)) as failed:
        verify(root, "files", record.stamp)
    assert "corrupted" in str(failed.value)
    with pytest.raises(ReleaseError, match=re.escape(entry.archive)):
        Restore(host, manifest, project(svc, manifest), root, record.stamp)
    assert not list(record.directory.glob("replaced-*")), "nothing is set aside or touched"

    (record.directory / "record.json").unlink()
    with pytest.raises(ReleaseError, match="incomplete"):
        verify(root, "files", record.stamp)


@pytest.mark.docker
def test_first_release_records_the_missing_volume_and_path_absent(
    up, deploy, make_service, docker_client, host, root: Path
) -> None:
    svc = make_service("fresh", volumes=("state",), paths=("/srv/data",))
    deploy.write_service(svc)
    manifest = load(deploy.dev, svc.name)

    record = take(host, manifest, project(svc, manifest), root)

    assert [(e.kind, e.target, e.absent, e.archive) for e in record.entries] == [
        ("volume", f"{svc.project}_state", True, None),
        ("path", "/srv/data", True, None),
    ]
    assert (record.directory / "SHA256SUMS").read_text() == ""
    assert verify(root, "fresh", record.stamp) == record

    # The release then creates the volume and writes to it; reverting empties it...
    _, fresh = up(svc)
    fresh.write("/data/state/written-by-the-release", b"x\n")
    compose(svc, manifest, "stop")
    report = restore(host, svc, manifest, root, record.stamp)
    compose(svc, manifest, "start")
    assert fresh.names("/data/state") == set()
    _, volume, path = report.actions
    assert "absent in the backup; removed (compose creates it empty)" in volume
    assert "left as it is" in path

    # ...and, as long as compose does not create it again, it stays removed.
    compose(svc, manifest, "down")
    restore(host, svc, manifest, root, record.stamp, create=False)
    with pytest.raises(docker.errors.NotFound):
        docker_client.volumes.get(f"{svc.project}_state")


@pytest.mark.docker
def test_a_missing_volume_of_a_deployed_service_fails_naming_both(
    up, make_service, host, root: Path
) -> None:
    svc = make_service("api")
    manifest, _ = up(svc, extra_manifest={"backup": {"volumes": ["ghost"]}})

    with pytest.raises(ReleaseError, match="api: volume 'ghost' does not exist") as failed:
        take(host, manifest, project(svc, manifest), root)
    assert f"docker volume create --label=com.docker.compose.project={svc.project}" in str(
        failed.value
    )
    assert not (root / "api").exists() or not any((root / "api").iterdir())


@pytest.mark.docker
def test_the_project_volume_is_preferred_over_the_bare_key(
    deploy, make_service, host, volumes, root: Path
) -> None:
    svc = make_service("db")
    key = f"{svc.project}-shared"
    deploy.write_service(svc, extra_manifest={"backup": {"volumes": [key]}})
    manifest = load(deploy.dev, svc.name)

    volumes(key)
    external = take(host, manifest, project(svc, manifest), root, stamp="20240101_000000")
    volumes(f"{svc.project}_{key}")
    prefixed = take(host, manifest, project(svc, manifest), root, stamp="20240101_000001")

    assert external.entries[0].target == key
    assert prefixed.entries[0].target == f"{svc.project}_{key}"


@pytest.mark.docker
def test_a_path_holding_a_mount_is_refused(up, make_service, host, root: Path) -> None:
    svc = make_service("mixed", volumes=("inner",), paths=("/data",))
    manifest, _ = up(svc)

    with pytest.raises(ReleaseError, match="mount point /data/inner"):
        take(host, manifest, project(svc, manifest), root)


def test_a_failed_write_leaves_no_archive_under_its_name(tmp_path: Path) -> None:
    def chunks():
        yield b"half an archive"
        raise OSError("the stream broke")

    with pytest.raises(OSError, match="the stream broke"):
        atomic.write(tmp_path / "01-volume-x.tar", chunks())
    assert list(tmp_path.iterdir()) == []


def test_a_file_another_process_writes_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "01-dump-db.dump"
    with atomic.replacing(target) as tmp:
        Runner().run(["printf", "dumped"], stdout_to=tmp, timeout=30)
        assert not target.exists(), "not under its name before the block ends"
    assert target.read_bytes() == b"dumped"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]

    with pytest.raises(CommandFailed), atomic.replacing(tmp_path / "02-dump-db.dump") as tmp:
        Runner().run(["sh", "-c", "printf half; exit 3"], stdout_to=tmp, timeout=30)
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_an_unreadable_record_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "web" / "20240101_000000"
    directory.mkdir(parents=True)
    (directory / "record.json").write_text("{not json")

    with pytest.raises(ReleaseError, match=r"record\.json is unreadable"):
        verify(tmp_path, "web", "20240101_000000")
    with pytest.raises(ReleaseError, match="not YYYYmmdd_HHMMSS"):
        verify(tmp_path, "web", "../etc")


# -- dumps ----------------------------------------------------------------------------------

DUMP = {
    "command": ["tar", "-c", "-C", "/data/db", "."],
    "restore": ["sh", "-c", "rm -rf /data/db/* && tar -x -C /data/db"],
}


@pytest.mark.docker
def test_a_dump_streams_into_the_backup_with_its_checksum(
    up, make_service, host, root: Path
) -> None:
    svc = make_service("db", volumes=("db",), backup={"dump": DUMP})
    manifest, db = up(svc)
    db.write("/data/db/table", BINARY)

    record = take(host, manifest, project(svc, manifest), root)

    (entry,) = record.entries
    assert (entry.kind, entry.target, entry.absent) == ("dump", "db", False)
    assert entry.container == db.container.name
    assert entry.archive == "01-dump-db.dump"
    with tarfile.open(record.directory / entry.archive) as tar:
        table = tar.extractfile("./table")
        assert table is not None and table.read() == BINARY
    checked = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"], cwd=record.directory, capture_output=True, text=True
    )
    assert checked.stdout == "01-dump-db.dump: OK\n", checked.stdout + checked.stderr
    (on_disk,) = json.loads((record.directory / "record.json").read_text())["entries"]
    assert on_disk["kind"] == "dump" and on_disk["sha256"] == entry.sha256
    assert on_disk["dump"] == DUMP
    assert verify(root, "db", record.stamp) == record
    assert "dump `tar -c -C /data/db .` in db" in record.describe()


@pytest.mark.docker
@pytest.mark.parametrize(
    ("command", "timeout", "said"),
    [
        (["sh", "-c", "echo relation missing >&2; exit 3"], 60, "exited 3; it said:\nrelation"),
        (["sh", "-c", "true"], 60, "exited 0 but wrote nothing"),
        (["sh", "-c", "printf partial; sleep 30"], 2, "timed out after 2s"),
    ],
    ids=["exits-non-zero", "writes-nothing", "times-out"],
)
def test_a_failed_dump_leaves_no_backup_and_names_its_command(
    up, make_service, host, root: Path, command, timeout, said
) -> None:
    svc = make_service("db", volumes=("db",), backup={"dump": {**DUMP, "command": command}})
    manifest, _ = up(svc)

    with pytest.raises(ReleaseError) as failed:
        take(host, manifest, project(svc, manifest), root, dump_timeout=timeout)

    message = str(failed.value)
    assert said in message
    assert render(project(svc, manifest).exec("db", command)) in message
    assert "no backup was kept" in message
    assert not (root / "db").exists() or not any((root / "db").iterdir())


@pytest.mark.docker
def test_a_dump_of_a_stopped_service_is_refused_before_anything_is_written(
    up, make_service, host, root: Path
) -> None:
    svc = make_service("db", volumes=("db",), backup={"dump": DUMP})
    manifest, _ = up(svc)
    compose(svc, manifest, "stop")

    with pytest.raises(ReleaseError, match="is exited") as failed:
        take(host, manifest, project(svc, manifest), root)
    assert failed.value.next_command.startswith(
        f"start it: {render(project(svc, manifest).argv('start', 'db'))}"
    )
    assert not (root / "db").exists()


def _record_with(directory: Path, entry: dict, archives: dict[str, bytes]) -> None:
    directory.mkdir(parents=True)
    sums = ""
    for name, data in archives.items():
        (directory / name).write_bytes(data)
        sums += f"{hashlib.sha256(data).hexdigest()}  {name}\n"
    (directory / "SHA256SUMS").write_text(sums)
    record = {"format": 1, "service": "db", "stamp": directory.name, "entries": [entry]}
    (directory / "record.json").write_text(json.dumps(record))


def test_a_dump_entry_is_read_back_and_verify_checks_its_file(tmp_path: Path) -> None:
    data = b"-- a dump\n" * 100
    entry = {
        "kind": "dump",
        "name": "tar -c -C /data/db .",
        "target": "db",
        "absent": False,
        "archive": "01-dump-db.dump",
        "sha256": hashlib.sha256(data).hexdigest(),
        "container": "proj-db-1",
        "dump": DUMP,
    }
    directory = tmp_path / "db" / "20240101_000000"
    _record_with(directory, entry, {"01-dump-db.dump": data})

    (read,) = verify(tmp_path, "db", "20240101_000000").entries
    assert read.dump == Dump(tuple(DUMP["command"]), tuple(DUMP["restore"]))
    assert read.label == "dump `tar -c -C /data/db .` in db"

    (directory / "01-dump-db.dump").write_bytes(data[:-1] + b"!")
    with pytest.raises(ReleaseError, match=r"archive 01-dump-db\.dump is corrupted"):
        verify(tmp_path, "db", "20240101_000000")


@pytest.mark.reliability("bad input", "a backup's SHA256SUMS that is not text")
def test_a_checksum_file_that_is_not_text_is_refused_naming_it(tmp_path: Path) -> None:
    data = b"-- a dump\n"
    entry = {
        "kind": "dump",
        "name": "pg_dump",
        "target": "db",
        "absent": False,
        "archive": "01-dump-db.dump",
        "sha256": hashlib.sha256(data).hexdigest(),
        "container": "proj-db-1",
        "dump": DUMP,
    }
    directory = tmp_path / "db" / "20240101_000000"
    _record_with(directory, entry, {"01-dump-db.dump": data})
    (directory / "SHA256SUMS").write_bytes(b"\xff\xfe not text\n")
    with pytest.raises(ReleaseError, match=r"cannot read SHA256SUMS: byte 0 is not text"):
        verify(tmp_path, "db", "20240101_000000")


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"dump": None}, "entries[0] has dump commands exactly when its kind is dump"),
        ({"kind": "volume"}, "entries[0] has dump commands exactly when its kind is dump"),
        ({"dump": {**DUMP, "restore": []}}, "entries[0].dump.restore must not be empty"),
        ({"dump": {"command": "tar -c ."}}, "entries[0].dump.command must be list, got str"),
        ({"kind": "snapshot"}, "entries[0].kind is 'snapshot', not one of volume, path, dump"),
    ],
)
def test_a_malformed_dump_entry_is_refused(tmp_path: Path, change: dict, problem: str) -> None:
    entry = {"kind": "dump", "name": "tar", "target": "db", "absent": True, "dump": DUMP}
    _record_with(tmp_path / "db" / "20240101_000000", {**entry, **change}, {})
    with pytest.raises(ReleaseError, match="unreadable") as failed:
        verify(tmp_path, "db", "20240101_000000")
    assert problem in str(failed.value)


# -- a record.json edited by hand or cut short -----------------------------------------------

ARCHIVE = b"an archive\n"
VOLUME_ENTRY = {
    "kind": "volume",
    "name": "data",
    "target": "proj_data",
    "absent": False,
    "archive": "01-volume-data.tar",
    "sha256": hashlib.sha256(ARCHIVE).hexdigest(),
    "container": "",
    "volume": {"driver": "local", "options": {}, "labels": {"a": "b"}},
    "dump": None,
}


def _valid_record(tmp_path: Path) -> Path:
    """A record as take() writes it (every key, nulls included); returns its path."""
    directory = tmp_path / "db" / "20240101_000000"
    _record_with(directory, VOLUME_ENTRY, {"01-volume-data.tar": ARCHIVE})
    path = directory / "record.json"
    record = json.loads(path.read_text())
    record.update(project="proj", taken_at="2024-01-01T00:00:00Z", note="", nothing_declared=False)
    path.write_text(json.dumps(record, indent=2) + "\n")
    assert verify(tmp_path, "db", "20240101_000000").entries[0].volume.labels == {"a": "b"}
    return path


@pytest.mark.reliability("bad input", "an unknown key in a backup record")
@pytest.mark.parametrize(
    ("old", "new", "said"),
    [
        ('"taken_at"', '"taken_on"', "taken_on is not a known key; did you mean taken_at?"),
        (
            '"sha256"',
            '"sha265"',
            "entries[0].sha265 is not a known key; did you mean entries[0].sha256?",
        ),
        (
            '"labels"',
            '"label"',
            "entries[0].volume.label is not a known key; did you mean entries[0].volume.labels?",
        ),
    ],
)
def test_an_unknown_key_in_a_record_is_refused_with_the_nearest_known_one(
    tmp_path: Path, old: str, new: str, said: str
) -> None:
    path = _valid_record(tmp_path)
    path.write_text(path.read_text().replace(old, new, 1))
    with pytest.raises(ReleaseError) as failed:
        verify(tmp_path, "db", "20240101_000000")
    assert f"backup record {path} is unreadable: {said}" in str(failed.value)
    assert "nothing was restored" in str(failed.value)


@pytest.mark.reliability("bad input", "a backup record edited by hand")
@pytest.mark.parametrize(
    ("old", "new", "said"),
    [
        ('"format": 1', '"format": 2', "format is 2, expected 1"),
        ('"format": 1', '"format": true', "format is True, expected 1"),
        ('"absent": false', '"absent": 0', "entries[0].absent must be bool, got int 0"),
        (
            '"nothing_declared": false',
            '"nothing_declared": true',
            "says nothing_declared: true with 1 entries",
        ),
        ('"01-volume-data.tar"', '".."', "entries[0].archive is '..', not a file name"),
        ('"project": "proj"', '"project": "proj", "project": "other"', "'project' appears twice"),
        ('"driver": "local"', '"driver": null', "entries[0].volume.driver must be str"),
    ],
    ids=["format", "format-bool", "absent-int", "nothing-declared", "archive", "twice", "null"],
)
def test_a_hand_edited_record_is_refused_naming_the_key(
    tmp_path: Path, old: str, new: str, said: str
) -> None:
    path = _valid_record(tmp_path)
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new, 1))
    with pytest.raises(ReleaseError) as failed:
        verify(tmp_path, "db", "20240101_000000")
    assert f"backup record {path} is unreadable: " in str(failed.value)
    assert said in str(failed.value), str(failed.value)


@pytest.mark.reliability("bad input", "a backup record cut short")
def test_a_record_cut_anywhere_is_refused(tmp_path: Path) -> None:
    path = _valid_record(tmp_path)
    whole = path.read_text().rstrip("\n")
    for end in range(len(whole)):
        path.write_text(whole[:end])
        with pytest.raises(ReleaseError, match=r"record\.json is unreadable"):
            verify(tmp_path, "db", "20240101_000000")


# -- a volume read where its files are ----------------------------------------------------


def test_a_volume_is_read_on_the_host_only_when_plain_local_and_readable(
    tmp_path: Path,
) -> None:
    data = tmp_path / "vol" / "_data"
    data.mkdir(parents=True)
    plain = {"Driver": "local", "Options": None, "Mountpoint": str(data)}
    assert engine.readable_directory(plain, None) == data
    assert engine.readable_directory(plain, "unix:///run/docker.sock") == data
    # Mounted only while a container uses it, or somewhere else altogether:
    assert engine.readable_directory({**plain, "Options": {"type": "tmpfs"}}, None) is None
    assert engine.readable_directory({**plain, "Driver": "rexray"}, None) is None
    assert engine.readable_directory(plain, "tcp://10.0.0.2:2376") is None
    assert engine.readable_directory(plain, "ssh://deploy@host") is None
    missing = {**plain, "Mountpoint": str(tmp_path / "gone" / "_data")}
    assert engine.readable_directory(missing, None) is None
    odd = tmp_path / "vol" / "da,ta"
    odd.mkdir()
    assert engine.readable_directory({**plain, "Mountpoint": str(odd)}, None) is None
    assert engine.archive_argv(data, "release-phases-volume")[-2:] == [
        "--transform=s,^_data,release-phases-volume,S",
        "_data",
    ]


@pytest.mark.docker
def test_a_volume_archived_on_the_host_equals_the_docker_apis_archive(
    up, make_service, docker_client, host, root: Path
) -> None:
    """Member for member (name, type, mode, owner, mtime, link, size, content): what tar
    makes of the mountpoint is what a restore would have got from the API."""
    svc = make_service("web", volumes=("web-data",))
    manifest, web = up(svc)
    web.write("/data/web-data/sub/b.bin", BINARY)
    web.write("/data/web-data/spaced", b"x\n")
    web.write("/data/web-data/_data", b"named like the mountpoint\n")
    web.sh(
        "cd /data/web-data && mkdir -p empty && chmod 0700 empty && ln -s sub/b.bin link"
        " && ln -s /_data/abs abs && ln sub/b.bin hard && chown 1234:4321 hard"
        " && chmod 0640 spaced"
    )
    volume = docker_client.volumes.get(f"{svc.project}_web-data")
    assert engine.readable_directory(volume.attrs, None) is not None

    record = take(host, manifest, project(svc, manifest), root)

    (entry,) = record.entries
    assert entry.archive is not None
    with (record.directory / entry.archive).open("rb") as fh:
        ours = compare.members(fh)
    assert verify(root, "web", record.stamp) is not None
    image = str(web.container.attrs["Image"])
    deployed = Deployed(host, manifest, project(svc, manifest))
    theirs = _volume_members(deployed, image, volume.name)
    assert sorted(ours) == sorted(theirs)
    names = {m[0] for m in ours}
    assert {"release-phases-volume/hard", "release-phases-volume/_data"} <= names


@pytest.mark.docker
def test_a_volume_bound_elsewhere_goes_through_the_api_and_comes_back(
    deploy, make_service, docker_client, host, root: Path, request, tmp_path: Path
) -> None:
    """A local volume with driver options (here a bind of another directory) is mounted
    only while a container uses it: its mountpoint on the host shows nothing, so it is
    read through a container and the API instead."""
    svc = make_service("bound")
    name = f"{svc.project}-bound"
    device = tmp_path / "device"
    device.mkdir()
    docker_client.volumes.create(
        name=name,
        driver="local",
        driver_opts={"type": "none", "o": "bind", "device": str(device)},
        labels={LABEL: "test_backup"},
    )
    request.addfinalizer(lambda: docker_client.volumes.get(name).remove(force=True))
    manifest = up_on_external(deploy, svc, name, request)
    box = Box(docker_client, svc)
    box.write("/data/bound/kept", BINARY)
    assert engine.readable_directory(docker_client.volumes.get(name).attrs, None) is None

    record = take(host, manifest, project(svc, manifest), root)
    assert members(record, "volume") == {"kept"}
    box.write("/data/bound/kept", b"changed\n")
    compose(svc, manifest, "stop")
    report = restore(host, svc, manifest, root, record.stamp)
    compose(svc, manifest, "start")

    assert report.actions[-1].endswith(compare.MEMBER_BY_MEMBER)

    assert box.read("/data/bound/kept") == BINARY
    assert (device / "kept").read_bytes() == BINARY


@pytest.mark.docker
def test_a_restored_volume_that_differs_from_its_backup_fails_the_check_naming_it(
    up, make_service, docker_client, host, root: Path
) -> None:
    """The check archives the volume again: the same bytes pass at once; anything else
    is compared member by member, and a member that differs is named."""
    svc = make_service("web", volumes=("web-data",))
    manifest, web = up(svc)
    web.write("/data/web-data/kept", BINARY)
    web.write("/data/web-data/sub/other", b"other\n")
    record = take(host, manifest, project(svc, manifest), root)
    compose(svc, manifest, "stop")
    restore(host, svc, manifest, root, record.stamp)
    compose(svc, manifest, "start")
    deployed = Deployed(host, manifest, project(svc, manifest))
    (entry,) = record.entries

    assert compare.check_restored(deployed, record, entry, None, "undo") == compare.BYTE_FOR_BYTE
    web.write("/data/web-data/kept", b"changed since\n")
    with pytest.raises(ReleaseError, match="release-phases-volume/kept differ") as failed:
        compare.check_restored(deployed, record, entry, None, "kept aside")
    assert "other" not in str(failed.value)
    assert failed.value.untouched == "kept aside"


@pytest.mark.docker
def test_a_backup_the_api_archived_is_restored_and_checked_member_by_member(
    up, make_service, docker_client, host, root: Path, monkeypatch
) -> None:
    """A backup of a volume the engine could not read on the host (the API's archive,
    whose headers GNU tar would write otherwise) is restored into a volume it can
    read: archived again, it cannot be the same bytes, so its members are compared."""
    svc = make_service("web", volumes=("web-data",))
    manifest, web = up(svc)
    web.write("/data/web-data/kept", BINARY)
    web.sh("cd /data/web-data && ln -s kept link && mkdir -p d && chown 1234:4321 d")
    taking = importlib.import_module("release_phases.backup.take")  # the module, not take()
    with monkeypatch.context() as patched:  # as if the engine could not read it
        patched.setattr(taking, "readable_directory", lambda *_: None)
        record = take(host, manifest, project(svc, manifest), root)
    assert (record.directory / str(record.entries[0].archive)).read_bytes()[257:265] != (
        compare.GNU_MAGIC
    )
    web.write("/data/web-data/kept", b"changed\n")
    compose(svc, manifest, "stop")
    report = restore(host, svc, manifest, root, record.stamp)
    compose(svc, manifest, "start")

    assert report.actions[-1].endswith(compare.MEMBER_BY_MEMBER), report.actions
    assert web.read("/data/web-data/kept") == BINARY
    assert web.sh("stat -c %u:%g /data/web-data/d") == b"1234:4321\n"


def _volume_members(deployed: Deployed, image: str, volume: str) -> list[compare.Member]:
    """The volume's members as the Docker API archives it."""
    with helper(deployed, image, volume, read_only=True) as mounted:
        return compare._spooled_members(mounted.get_archive(VOLUME_MOUNT)[0])


@pytest.mark.docker
def test_a_volume_filled_on_the_host_is_what_the_api_would_have_restored(
    up, make_service, docker_client, host, root: Path, monkeypatch
) -> None:
    """Hard links, symbolic links (one pointing out of the volume), owners, modes, an
    empty private directory, the volume's own directory: the restore by tar on the
    host and the restore through the API give the same members, the backup's."""
    svc = make_service("web", volumes=("web-data",))
    manifest, web = up(svc)
    web.write("/data/web-data/sub/b.bin", BINARY)
    web.write("/data/web-data/_data", b"named like the mountpoint\n")
    web.sh(
        "cd /data/web-data && mkdir -p empty && chmod 0700 empty && ln -s sub/b.bin link"
        " && ln -s /etc/passwd out && ln sub/b.bin hard && chown 1234:4321 hard"
        " && chmod 4755 hard && chown 999:998 . && chmod 0750 . && touch -d @1000000000 sub"
    )
    record = take(host, manifest, project(svc, manifest), root)
    (entry,) = record.entries
    assert entry.archive is not None
    with (record.directory / entry.archive).open("rb") as fh:
        backed_up = compare.members(fh)
    deployed = Deployed(host, manifest, project(svc, manifest))
    image = str(web.container.attrs["Image"])
    volume = f"{svc.project}_web-data"
    restored = {}
    taking = importlib.import_module("release_phases.backup.restore")
    for way in ("host", "api"):
        web.sh("rm -rf /data/web-data/sub /data/web-data/hard && echo new > /data/web-data/x")
        compose(svc, manifest, "stop")
        with monkeypatch.context() as patched:
            if way == "api":  # as for a volume the engine cannot write on the host
                patched.setattr(taking, "writable_directory", lambda *_: None)
            report = restore(host, svc, manifest, root, record.stamp)
        compose(svc, manifest, "start")
        assert ("flushed to disk" in report.actions[-1]) == (way == "host"), report.actions
        assert report.actions[-1].endswith(compare.BYTE_FOR_BYTE), report.actions
        restored[way] = _volume_members(deployed, image, volume)
    assert sorted(restored["host"]) == sorted(restored["api"]) == sorted(backed_up)
    assert web.read("/data/web-data/hard") == BINARY


def test_extraction_on_the_host_writes_nothing_outside_the_directory(tmp_path: Path) -> None:
    """An archive made to escape: a member with `..`, an absolute name, and a symbolic
    link to a directory outside followed by a member through it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "volume" / "_data"
    target.mkdir(parents=True)
    top = VOLUME_MOUNT.lstrip("/")
    built = tmp_path / "evil.tar"
    with tarfile.open(built, "w") as tar:

        def add(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, link
            data = b"" if kind != tarfile.REGTYPE else b"escaped\n"
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        add(top, tarfile.DIRTYPE)
        add(f"{top}/kept")
        add(f"{top}/../../outside/dotdot")
        add(f"/{top}/absolute")
        add(f"{top}/link", tarfile.SYMTYPE, str(outside))
        add(f"{top}/link/through")
    result = Runner().run(engine.extract_argv(target), stdin_from=built, timeout=30, check=False)

    assert list(outside.iterdir()) == [], result.output
    assert (target / "kept").read_bytes() == b"escaped\n"
    assert not result.ok  # tar says what it refused


@pytest.mark.parametrize(
    ("stream", "same"),
    [
        (BINARY * 3000, True),
        (BINARY * 2999, False),  # cut short
        (BINARY * 3000 + b"\0", False),  # one byte more
        (BINARY * 1500 + b"\1" + BINARY[1:] + BINARY * 1499, False),  # one byte differs
        (b"", False),
    ],
)
def test_a_stream_equals_a_file_only_byte_for_byte(
    tmp_path: Path, stream: bytes, same: bool
) -> None:
    path = tmp_path / "archive.tar"
    path.write_bytes(BINARY * 3000)  # 3 MB: more than one chunk compared at a time
    assert compare._equals_file(path, io.BytesIO(stream)) is same


@pytest.mark.docker
def test_a_failed_extraction_or_flush_names_the_command_and_where_what_stood_is_kept(
    up, make_service, docker_client, host, root: Path, tmp_path: Path
) -> None:
    """tar on the host fails (the archive was cut short after it was verified): the
    error names the command and the set-aside; once the archive is whole again, the
    restore run again puts the data back. A flush that fails is worded the same way."""
    svc = make_service("web", volumes=("web-data",))
    manifest, web = up(svc)
    web.write("/data/web-data/kept", BINARY)
    # Large enough that half the archive ends inside this file's content.
    web.sh("yes abcdefgh | head -c 1048576 > /data/web-data/big")
    big = web.sh("md5sum /data/web-data/big")
    record = take(host, manifest, project(svc, manifest), root)
    web.write("/data/web-data/kept", b"changed\n")
    (entry,) = record.entries
    archive = record.directory / str(entry.archive)
    whole = archive.read_bytes()
    restoring = Restore(host, manifest, project(svc, manifest), root, record.stamp)
    restoring.preflight()
    archive.write_bytes(whole[: len(whole) // 2])  # after verify: as a failing disk would
    compose(svc, manifest, "stop")

    with pytest.raises(ReleaseError, match=r"`tar --extract .* exited 2: .*") as failed:
        restoring.volumes()
    assert failed.value.untouched == restoring.undo
    assert "replaced-" in failed.value.untouched
    assert failed.value.next_command.startswith("fix the cause (see ")

    archive.write_bytes(whole)
    report = restore(host, svc, manifest, root, record.stamp)
    compose(svc, manifest, "start")
    assert web.read("/data/web-data/kept") == BINARY
    assert web.sh("md5sum /data/web-data/big") == big
    assert report.actions[-1].endswith(compare.BYTE_FOR_BYTE)

    again = Restore(host, manifest, project(svc, manifest), root, record.stamp)
    image = str(web.container.attrs["Image"])
    with pytest.raises(ReleaseError, match=r"`sync --file-system \S*gone` exited 1") as flush:
        again._check_volume(entry, image, tmp_path / "gone")
    assert flush.value.untouched == again.undo
