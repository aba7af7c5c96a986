"""Faults injected for real, each ending well: the release stops, says what happened
and what it left untouched, and the next command it names works once the fault is gone.

Every fault here is the real thing: Docker reached through a socket that dies, an
origin that is not there, a tmpfs that fills up, an endpoint that never answers, a
script that never ends. Each test removes the fault, follows the printed next
command and checks that the release then completes.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from release_phases import atomic
from selftests.support import engine
from selftests.support.scenario import container, v1_running_v2_merged

pytestmark = pytest.mark.docker


def next_command(run: engine.Run) -> str:
    """The `next:` line of the run's summary."""
    found = re.findall(r"^next: (.*)$", run.output, re.MULTILINE)
    assert found, run
    return found[-1]


def follow(run: engine.Run, command: str, **kw: object) -> engine.Run:
    """Run the pytest command an operator was told to run (its options, as printed)."""
    words = command.split()
    assert words[:3] == ["pytest", "-m", run.argv[4 - 1]] or words[:2] == ["pytest", "-m"], words
    mode = words[2]
    rest = words[3:]
    assert rest[:2] == ["--ticket", run.ticket], words
    return engine.run(run.repo, run.ticket, *rest[2:], mode=mode, **kw)  # type: ignore[arg-type]


# -- the workspace's disk fills up during a backup ---------------------------------------


@contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A small tmpfs mounted at ``where`` (created), unmounted whatever happens."""
    atomic.private_dir(where)  # as the engine would have made it
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
        check=True,
        capture_output=True,
    )
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True)


def fill_volume(client, svc, directory: str, megabytes: int) -> None:
    """Write ``megabytes`` of random bytes into the service's container at ``directory``."""
    data = os.urandom(megabytes * 1024 * 1024)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("big.bin")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    assert container(client, svc).put_archive(directory, buf.getvalue())


def _mib(run: engine.Run) -> str:
    """The amount the message says the backup needs more than."""
    found = re.search(r"the backup needs more than ([0-9.]+ [KMG]?i?B)", run.output)
    assert found, run
    return found[1]


@pytest.mark.reliability("fault", "the workspace's disk fills up during a backup")
def test_a_full_disk_during_a_backup_stops_prepare_at_once_and_keeps_nothing_half_written(
    deploy, make_service, docker_client
):
    services = v1_running_v2_merged(deploy, make_service, ("web",), volumes=("data",))
    fill_volume(docker_client, services["web"], "/data/data", 6)
    backups = deploy.prod / ".asd/workspace/backups"
    with tmpfs(backups, "2m"):
        run = engine.run(deploy.prod, "1234", timeout=300)
        assert run.rc == 1, run
        failed = run.event("prepare", "failed")
        assert failed["step"] == "test_backup" and failed["service"] == "web", failed
        # Fast: the write's own error, not a Docker API call timing out.
        assert int(failed["duration"].rstrip("s")) < 30, failed
        assert "no space left on device" in run.output.lower(), run
        assert str(backups / "web") in run.output, run
        assert run.state.backups == {}, "no half-written backup is named"
        assert not any((backups / "web").iterdir()), "the partial directory was removed"
        command = next_command(run)
        assert command.startswith(f"free more than {_mib(run)}"), command
        assert f"df -h {backups / 'web'}" in command, command
    # The space is freed (the tmpfs is gone); the command it named goes on.
    again = follow(run, command.split("; then ")[-1])
    assert again.rc == 0, again
    assert (again.state.phase, again.state.phase_status) == ("verify", "done"), again
    stamp = again.state.backups["web"]
    assert (backups / "web" / stamp / "record.json").is_file()
