"""Consistent backups for real: a dump taken in prepare and restored by a revert, and
`backup.when: stopped`, an archive taken in migrate while the service is down.

The "database" is a busybox volume at /data/db-data; its dump is a tar of it on
stdout, and its restore empties the volume and untars stdin into it.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from selftests.support import composecli, engine
from selftests.support.scenario import container, v1_running_v2_merged

pytestmark = pytest.mark.docker

DATA = "/data/db-data"
DUMP = {
    "command": ["tar", "-c", "-C", DATA, "."],
    "restore": ["sh", "-c", f"rm -rf {DATA}/* && tar -x -C {DATA}"],
}
BINARY = bytes(range(256)) * 64


def _sh(client, svc, script: str) -> bytes:
    code, out = container(client, svc).exec_run(["sh", "-c", script])
    assert code == 0, out
    return out


def _write(client, svc, path: str, data: bytes) -> None:
    octal = "".join(f"\\{b:03o}" for b in data)
    _sh(client, svc, f"mkdir -p $(dirname {path}) && printf '{octal}' > {path}")


def _files(client, svc) -> dict[str, str]:
    """Every file of the volume with the sha256 of its content."""
    listing = _sh(client, svc, f"cd {DATA} && for f in $(ls -A); do echo $f; done").decode()
    return {
        name: hashlib.sha256(_sh(client, svc, f"cat {DATA}/{name}")).hexdigest()
        for name in listing.split()
    }


def _backups(deploy, service: str) -> Path:
    return deploy.prod / ".asd/workspace/backups" / service


# -- prepare: a dump that fails ------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "said"),
    [
        (["cat", f"{DATA}/export"], "exited 1"),
        (["sh", "-c", f"cat {DATA}/export 2>/dev/null || true"], "exited 0 but wrote nothing"),
    ],
    ids=["exits-non-zero", "writes-nothing"],
)
def test_a_failing_dump_fails_prepare_before_anything_is_touched(
    deploy, make_service, docker_client, command, said
):
    backup = {"dump": {**DUMP, "command": command}}
    services = v1_running_v2_merged(
        deploy, make_service, ("db",), volumes=("db-data",), backup=backup
    )
    db = services["db"]
    before = container(docker_client, db).id
    base = deploy.prod_repo.head.commit.hexsha

    run = engine.run(deploy.prod, "1234")

    assert run.rc == 1, run
    failed = run.event("prepare", "failed")
    assert failed["service"] == "db" and failed["step"] == "test_backup"
    assert said in run.output and " ".join(command[:2]) in run.output, run
    assert container(docker_client, db).id == before, "nothing was recreated"
    assert not list(_backups(deploy, "db").glob("*/record.json")), "no backup counts"
    assert run.state.backups == {}
    rerun = f"pytest -m release --ticket 1234 --base-sha {base}"
    assert rerun in run.output, run

    # The cause fixed on the service, the command the message names finishes the release.
    _write(docker_client, db, f"{DATA}/export", b"exported\n")
    again = engine.run(deploy.prod, "1234", "--base-sha", base)
    assert again.rc == 0, again
    stamp = again.state.backups["db"]
    assert (_backups(deploy, "db") / stamp / "01-dump-db.dump").read_bytes() == b"exported\n"


# -- a dump taken in prepare, fed back by the revert -------------------------------------


def ticket_changes_data() -> str:
    """The ticket script: it changes the data inside db through the host's Compose."""
    return (
        composecli.shell("-f", "packages/db/compose.yaml", "exec", "-T", "db")
        + f" sh -c 'echo migrated > {DATA}/table && echo new > {DATA}/added && rm {DATA}/gone'\n"
    )


def _dumped_release(deploy, make_service, docker_client, restore=DUMP["restore"]):
    """db (its data in a volume, backed up as a dump) released to tag 2; the ticket
    script changes the data: one file rewritten, one added, one removed."""
    services = v1_running_v2_merged(
        deploy,
        make_service,
        ("db",),
        volumes=("db-data",),
        backup={"dump": {**DUMP, "restore": restore}},
        files={"releases/1234-migrate-data.sh": ticket_changes_data()},
    )
    db = services["db"]
    _write(docker_client, db, f"{DATA}/table", BINARY)
    _write(docker_client, db, f"{DATA}/gone", b"removed by the ticket\n")
    before = _files(docker_client, db)
    run = engine.run(deploy.prod, "1234")
    assert run.rc == 0, run
    assert _files(docker_client, db) != before, "the ticket changed the data"
    return db, run, before


def _titles(report: Path) -> list[str]:
    """The step details' titles, in the order the report shows them."""
    return re.findall(r"h4(?:>|&gt;)(.*?)(?:<|&lt;)/h4", report.read_text())


def test_a_dump_is_taken_in_prepare_and_fed_back_by_the_revert(
    deploy, make_service, docker_client
):
    db, release, before = _dumped_release(deploy, make_service, docker_client)
    directory = _backups(deploy, "db") / release.state.backups["db"]
    (entry,) = json.loads((directory / "record.json").read_text())["entries"]
    assert (entry["kind"], entry["archive"], entry["dump"]) == ("dump", "01-dump-db.dump", DUMP)
    dumped = (directory / "01-dump-db.dump").read_bytes()
    assert hashlib.sha256(dumped).hexdigest() == entry["sha256"]
    assert (directory / "SHA256SUMS").read_text() == f"{entry['sha256']}  01-dump-db.dump\n"

    run = engine.run(deploy.prod, "1234", mode="revert")

    assert run.rc == 0, run
    assert _files(docker_client, db) == before, "the data is back, byte for byte"
    assert _sh(docker_client, db, f"cat {DATA}/table") == BINARY
    running = container(docker_client, db)
    assert running.image.id == docker_client.images.get(f"{db.repository}:1").id
    # What the revert replaced was dumped first, into a backup of its own.
    (aside,) = directory.glob("replaced-*")
    (kept,) = json.loads((aside / "record.json").read_text())["entries"]
    assert kept["kind"] == "dump" and not kept["absent"]
    with tarfile.open(aside / kept["archive"]) as tar:
        added = tar.extractfile("./added")
        assert added is not None and added.read() == b"new\n"
    (report,) = deploy.prod.glob("reports/1234-revert-*.html")
    titles = _titles(report)
    order = [
        "set aside before stopping (so the revert can be undone)",
        "compose stop",
        "compose up --no-start",
        "restore",
        "compose start",
        "health probes",
        "restore dump",
        "health probes",
    ]
    assert [t for t in titles if t in order][: len(order)] == order, titles


def test_a_failing_restore_fails_the_step_and_a_fixed_manifest_finishes_the_revert(
    deploy, make_service, docker_client
):
    broken = ["sh", "-c", "echo 'restore: disk full' >&2; exit 7"]
    db, _, before = _dumped_release(deploy, make_service, docker_client, restore=broken)
    changed = _files(docker_client, db)

    run = engine.run(deploy.prod, "1234", mode="revert")

    assert run.rc == 1, run
    failed = run.event("revert", "failed")
    assert (failed["service"], failed["step"], failed["rc"]) == ("db", "restore-dump", "7")
    assert "exited 7:\nrestore: disk full" in run.output, run
    assert "backup.dump.restore in packages/db/manifest.yaml" in run.output
    assert "then rerun the revert, which restores db again" in run.output
    assert "pytest -m revert --ticket 1234" in run.output
    # It runs the old code, healthy; its data is as the release left it, and kept aside.
    running = container(docker_client, db)
    assert running.image.id == docker_client.images.get(f"{db.repository}:1").id
    assert _files(docker_client, db) == changed
    assert re.search(r"Left untouched: db runs the reverted code.*replaced-\d{8}_\d{6}", run.output)

    # The restore fixed in the manifest (a commit on prod), the same command finishes it.
    manifest_path = deploy.prod / "packages/db/manifest.yaml"
    manifest = yaml.safe_load(manifest_path.read_text())
    manifest["backup"]["dump"]["restore"] = DUMP["restore"]
    manifest_path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    deploy.prod_repo.git.commit("-am", "db: a restore that works")
    again = engine.run(deploy.prod, "1234", mode="revert")
    assert again.rc == 0, again
    assert _files(docker_client, db) == before


def test_a_revert_of_a_service_that_no_longer_runs_restores_the_dump_and_says_none_was_set_aside(
    deploy, make_service, docker_client
):
    services = v1_running_v2_merged(
        deploy,
        make_service,
        ("db",),
        v2_health={"db": "crash"},
        volumes=("db-data",),
        backup={"dump": DUMP},
        timeout=3,
    )
    db = services["db"]
    _write(docker_client, db, f"{DATA}/table", BINARY)
    before = _files(docker_client, db)
    failed = engine.run(deploy.prod, "1234")
    assert failed.event("migrate", "failed")["service"] == "db", failed
    assert container(docker_client, db).status == "exited"

    run = engine.run(deploy.prod, "1234", mode="revert")

    assert run.rc == 0, run
    assert _files(docker_client, db) == before
    directory = _backups(deploy, "db") / failed.state.backups["db"]
    (aside,) = directory.glob("replaced-*")
    (kept,) = json.loads((aside / "record.json").read_text())["entries"]
    assert kept["kind"] == "dump" and kept["absent"]
    (report,) = deploy.prod.glob("reports/1234-revert-*.html")
    assert "db was not running, so nothing could be dumped" in report.read_text()


# -- backup.when: stopped ----------------------------------------------------------------

STOPPED = {"volumes": ["db-data"], "when": "stopped"}


def _stopped_service(deploy, make_service, docker_client, backup=STOPPED, **kw):
    """db at tag 1 with data in its volume, backed up while stopped; tag 2 merged."""
    services = v1_running_v2_merged(
        deploy, make_service, ("db",), volumes=("db-data",), backup=backup, **kw
    )
    db = services["db"]
    _write(docker_client, db, f"{DATA}/table", BINARY)
    _write(docker_client, db, f"{DATA}/gone", b"removed by the ticket\n")
    return db, _files(docker_client, db)


def _step_line(run, phase: str, service: str) -> dict[str, str]:
    (line,) = [
        e
        for e in run.events
        if e["phase"] == phase and e["event"] == "step" and e.get("service") == service
    ]
    return line


def test_when_stopped_archives_in_migrate_and_the_revert_restores_it(
    deploy, make_service, docker_client
):
    db, before = _stopped_service(
        deploy,
        make_service,
        docker_client,
        files={"releases/1234-migrate-data.sh": ticket_changes_data()},
    )

    run = engine.run(deploy.prod, "1234")

    assert run.rc == 0, run
    assert _step_line(run, "prepare", service="db")["backup"] == "in-migrate"
    migrated = _step_line(run, "migrate", service="db")
    stamp = run.state.backups["db"]
    assert migrated["stamp"] == stamp
    assert re.fullmatch(r"\d+\.\d", migrated["backup_seconds"]), migrated
    record = json.loads((_backups(deploy, "db") / stamp / "record.json").read_text())
    assert [e["kind"] for e in record["entries"]] == ["volume"]
    assert record["note"] == "taken in migrate, with the old containers stopped"
    assert record["taken_at"] >= run.state.timestamps["MIGRATE_START"]
    (report,) = deploy.prod.glob("reports/1234-release-*.html")
    titles = _titles(report)
    order = ["compose stop (for the backup)", "backup (taken stopped)", "compose up"]
    assert [t for t in titles if t in order] == order, titles
    assert "db: taken in migrate (backup.when: stopped)" in report.read_text()
    assert _files(docker_client, db) != before, "the ticket changed the data"

    reverted = engine.run(deploy.prod, "1234", mode="revert")

    assert reverted.rc == 0, reverted
    assert _files(docker_client, db) == before


def test_when_stopped_a_failed_backup_starts_the_old_containers_again(
    deploy, make_service, docker_client
):
    db, _ = _stopped_service(
        deploy, make_service, docker_client, backup={**STOPPED, "volumes": ["ghost"]}
    )
    old = container(docker_client, db).id

    run = engine.run(deploy.prod, "1234")

    assert run.rc == 1, run
    failed = run.event("migrate", "failed")
    assert (failed["service"], failed["step"]) == ("db", "backup")
    assert "volume 'ghost' does not exist" in run.output, run
    assert "db: its old containers were started again, nothing was recreated" in run.output
    running = container(docker_client, db)
    assert (running.id, running.status) == (old, "running")
    assert running.image.id == docker_client.images.get(f"{db.repository}:1").id
    assert run.state.backups == {}

    # The next command, followed: create the volume it names, then resume migrate.
    create = [
        "docker",
        "volume",
        "create",
        f"--label=com.docker.compose.project={db.project}",
        "--label=com.docker.compose.volume=ghost",
        f"{db.project}_ghost",
    ]
    assert f"create it first: {' '.join(create)}" in run.output, run
    subprocess.run(create, check=True, capture_output=True)
    resume = "pytest -m release --ticket 1234 --from=migrate"
    assert resume in run.output
    again = engine.run(deploy.prod, "1234", "--from=migrate")
    assert again.rc == 0, again
    assert "db" in again.state.backups
    assert _step_line(again, "migrate", service="db")["stamp"] == again.state.backups["db"]


def test_a_revert_of_a_release_that_stopped_before_the_backup_says_there_is_none(
    deploy, make_service, docker_client
):
    db, before = _stopped_service(
        deploy,
        make_service,
        docker_client,
        files={"packages/db/pre_start_init.sh": "echo 'schema check failed' >&2\nexit 3\n"},
    )
    failed = engine.run(deploy.prod, "1234")
    assert failed.event("migrate", "failed")["step"] == "pre_start_init", failed
    old = container(docker_client, db).id

    run = engine.run(deploy.prod, "1234", mode="revert")

    assert run.rc == 1, run
    assert (
        "db has no backup in BACKUPS of "
        f"{deploy.prod}/.asd/workspace/releases/1234.env: it is taken in migrate"
        " (backup.when: stopped), and the release stopped before taking it"
    ) in run.output, run
    assert "Left untouched: db: its containers and data, nothing was stopped" in run.output
    assert "pytest -m revert --ticket 1234 --skip-data" in run.output
    running = container(docker_client, db)
    assert (running.id, running.status) == (old, "running")
    assert _files(docker_client, db) == before


def test_a_resumed_migrate_keeps_the_backup_it_took_before_the_new_version_ran(
    deploy, make_service, docker_client, images
):
    db, before = _stopped_service(
        deploy,
        make_service,
        docker_client,
        v2_health={"db": "error"},
        v2_tag={"db": "2-fixable-stopped"},  # this test alone rebuilds it
        timeout=3,
    )
    first = engine.run(deploy.prod, "1234")
    assert first.event("migrate", "failed")["step"] == "health", first
    taken = first.state.backups["db"]
    # The new version wrote to the data before it was found unhealthy.
    _write(docker_client, db, f"{DATA}/table", b"written by the new version\n")
    images.get("db", db.tag, "ok", rebuild=True)

    run = engine.run(deploy.prod, "1234", "--from=migrate")

    assert run.rc == 0, run
    assert run.state.backups == {"db": taken}, "the backup is not taken again"
    line = _step_line(run, "migrate", service="db")
    assert line["stamp"] == taken and "backup_seconds" not in line
    assert engine.run(deploy.prod, "1234", mode="revert").rc == 0
    assert _files(docker_client, db) == before
