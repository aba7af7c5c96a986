"""Consistent backups for real: a dump taken in prepare and restored by a revert, and
`backup.when: stopped`, an archive taken in migrate while the service is down.

The "database" is a busybox volume at /data/db-data; its dump is a tar of it on
stdout, and its restore empties the volume and untars stdin into it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from selftests.support import engine
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
