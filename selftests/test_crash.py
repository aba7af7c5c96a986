"""kill -9 of the engine anywhere: nothing is lost, and the next command recovers.

Each case starts a real release (or revert) of a service whose volume holds data,
waits until the run reaches its kill point, and sends SIGKILL to the engine's
pytest process; what the engine started (a ticket script, `compose up`, a dump's
`compose exec`) lives on, as it would on a host. Then it checks what the crash
left: the state file parses and names the phase, the log holds whole lines only,
every backup BACKUPS names is intact, and the lock is stale. Last, it runs what
an operator would: the same command again, or the `--from` the refusal names, or
the revert, and checks that it completed, that the takeover ended what the dead
run left running, and (after a revert) that the data is back byte for byte.

Kill points are found by watching what the engine shows of itself: the log's
`event=began step=...` lines, the files a backup writes, the containers, and the
lock file, which names the process group of each command the run has running.
A step is made long where a kill must land inside it: a big volume to archive or
restore, a dump or a ticket script that waits, an old container slow to stop, a
new one slow to answer its health check.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from release_phases import eventlog, leftovers, lock
from release_phases.backup.record import RECORD_NAME, incomplete, verify
from release_phases.host.engine import HELPER_REPO_LABEL
from release_phases.state import State
from selftests.support import engine
from selftests.support.deployrepo import DeployRepo, Service
from selftests.support.scenario import running_on_prod

pytestmark = pytest.mark.docker

TICKET = "1234"
KEY = "api-data"
DATA = f"/data/{KEY}"
#: Seconds to wait for a run to reach its kill point.
REACH = 120.0

#: Changes the data as a migration would; hangs while the flag file exists.
TICKET_SCRIPT = """\
set -e
docker exec {container} sh -c 'echo migrated > {data}/record.txt; echo new > {data}/v2.txt'
if [ -e .asd/hang ]; then
    echo started > .asd/ticket-started
    sleep 302 &
    wait
fi
"""

#: A dump whose first run in a container takes its time (a later one, the recovery's, does
#: not); killing its `compose exec` client leaves the sleep in the container to end alone.
SLOW_DUMP = {
    "command": [
        "sh",
        "-c",
        f"[ -e /tmp/dumped ] || {{ touch /tmp/dumped; sleep 20; }}; tar -c -C {DATA} .",
    ],
    "restore": ["sh", "-c", f"rm -rf {DATA}/* && tar -x -C {DATA}"],
}

#: A quick dump whose restore takes its time before it reads the dump.
SLOW_RESTORE = {
    "command": ["tar", "-c", "-C", DATA, "."],
    "restore": ["sh", "-c", f"sleep 8; rm -rf {DATA}/* && tar -x -C {DATA}"],
}

#: The new version answers its health check only after a while.
SLOW_START = ["sh", "-c", "sleep 6; exec /bin/busybox httpd -f -p 8080 -h /www"]


# -- watching the run ----------------------------------------------------------------------


@dataclass
class Watch:
    """What the killed run shows of itself while it runs."""

    repo: Path
    svc: Service

    @property
    def log(self) -> Path:
        return self.repo / ".asd/workspace/releases" / f"{TICKET}.log"

    @property
    def lock_path(self) -> Path:
        return self.repo / ".asd/workspace/releases/.lock"

    @property
    def backups(self) -> Path:
        return self.repo / ".asd/workspace/backups" / self.svc.name

    def began(self, phase: str, step: str) -> bool:
        if not self.log.exists():
            return False
        wanted = (f"phase={phase}", "event=began", f"step={step}")
        return any(
            all(w in line.split() for w in wanted) for line in self.log.read_text().splitlines()
        )

    def running(self, word: str) -> bool:
        """A command whose argv holds ``word`` runs in a group the lock file names."""
        holder = lock.read(self.lock_path)
        for pgid, _ in holder.groups if holder else ():
            try:
                argv = (Path("/proc") / str(pgid) / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            # The word itself, or a program of that name given by its path.
            if any(a == word.encode() or a.endswith(b"/" + word.encode()) for a in argv):
                return True
        return False

    def partial(self, kind: str) -> bool:
        """A backup file of ``kind`` is being written (not yet renamed to its name)."""
        for path in self.backups.glob(f"*/.*-{kind}-*.partial"):
            try:
                # An archive has begun once bytes arrive; a dump's file is made empty first.
                if kind != "volume" or path.stat().st_size > 0:
                    return True
            except FileNotFoundError:
                pass  # renamed or removed since the listing
        return False

    def new_container_runs(self) -> bool:
        """The release's container (tag 2) runs and `up` has ended: the health wait is on."""
        done = subprocess.run(
            [
                "docker",
                "ps",
                "-q",
                "--filter",
                f"label=com.docker.compose.project={self.svc.project}",
                "--filter",
                f"ancestor={self.svc.repository}:2",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        return bool(done.stdout.strip()) and not self.running("up") and not self.answers()

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.svc.endpoint, timeout=0.5):
                return True
        except OSError:  # refused, reset, timed out, or an HTTP error
            return False

    def set_aside_done(self) -> bool:
        """A revert's set-aside is complete: the restore into the volume is under way."""
        return any(self.backups.glob(f"*/replaced-*/{RECORD_NAME}"))


@dataclass(frozen=True)
class KillPoint:
    id: str
    #: The phase the state file names after the kill.
    phase: str
    when: Callable[[Watch], bool]
    #: Which run is killed: the release, or the revert of a completed release.
    mode: str = "release"
    #: How the operator recovers: go on with the release, or revert it.
    recover: str = "resume"
    big_volume: bool = False
    #: backup.when: stopped, so the archive is taken in migrate with the service down.
    when_stopped: bool = False
    slow_dump: bool = False
    slow_restore: bool = False
    slow_start: bool = False
    #: prod's post-merge hook sleeps: `git pull` has moved HEAD and not yet returned.
    slow_pull: bool = False
    #: Every health round takes a second (a `command` kind that sleeps), in both
    #: versions: a kill as the last, quick checks begin lands before the run ends.
    slow_health: bool = False
    hang_ticket: bool = False
    #: release_stop_timeout for the killed run: the old container takes this long to stop.
    stop_timeout: int = 1
    #: The killed run must have left a command running.
    leaves_running: bool = False
    #: ... which runs on until the takeover ends it. Not so a command that prints as it
    #: goes (`compose up`): with the engine gone nothing reads its output, and its next
    #: line ends it (SIGPIPE).
    until_takeover: bool = False
    #: The killed run must have left a backup directory half written (no record).
    half_backup: bool = False
    #: ... and a throwaway container holding the volume it was archiving.
    helper: bool = False
    #: The volume binds another directory (driver options), so the engine cannot read
    #: it on the host with tar and archives it through a throwaway container instead.
    bound_volume: bool = False
    quick: bool = False
    #: Merged into the compose service of both versions.
    compose: dict[str, object] = field(default_factory=dict)


def began(phase: str, step: str) -> Callable[[Watch], bool]:
    return lambda w: w.began(phase, step)


POINTS = [
    # Inside each long step.
    # A plain local volume is archived by tar on the host; what a kill leaves is that
    # tar, if it has not finished, and half an archive.
    KillPoint(
        "backup-archive",
        "prepare",
        lambda w: w.began("prepare", "test_backup") and w.partial("volume"),
        big_volume=True,
        half_backup=True,
        quick=True,
    ),
    # Any other is archived through a throwaway container, which the kill leaves behind.
    KillPoint(
        "backup-archive-while-stopped",
        "migrate",
        lambda w: w.began("migrate", "test_migrate") and w.partial("volume"),
        big_volume=True,
        when_stopped=True,
        half_backup=True,
        helper=True,
        bound_volume=True,
    ),
    KillPoint(
        "backup-dump",
        "prepare",
        lambda w: w.began("prepare", "test_backup") and w.running("exec") and w.partial("dump"),
        slow_dump=True,
        leaves_running=True,
        until_takeover=True,
        half_backup=True,
        quick=True,
    ),
    KillPoint(
        "compose-up",
        "migrate",
        lambda w: w.began("migrate", "test_migrate") and w.running("up"),
        # SIGWINCH is ignored: stopping the old container takes the whole timeout.
        compose={"stop_signal": "SIGWINCH"},
        stop_timeout=30,
        leaves_running=True,
        quick=True,
    ),
    KillPoint(
        "health-wait",
        "migrate",
        lambda w: w.began("migrate", "test_migrate") and w.new_container_runs(),
        slow_start=True,
        recover="revert",
        quick=True,
    ),
    KillPoint(
        # The backup taken with the service stopped is complete: it must be named
        # already, or the revert has nothing to bring the old data back from.
        "health-wait-after-a-stopped-backup",
        "migrate",
        lambda w: w.began("migrate", "test_migrate") and w.new_container_runs(),
        when_stopped=True,
        slow_start=True,
        recover="revert",
    ),
    KillPoint(
        # HEAD has moved and the pull step has not recorded it: the state file must say
        # where the release is from (PULL_FROM), or a rerun finds nothing to release.
        "git-pull",
        "prepare",
        lambda w: w.began("prepare", "test_pull") and (w.repo / ".asd/pulled").exists(),
        slow_pull=True,
        quick=True,
    ),
    KillPoint(
        "ticket-script",
        "ticket",
        lambda w: (w.repo / ".asd/ticket-started").exists() and w.running("bash"),
        hang_ticket=True,
        leaves_running=True,
        until_takeover=True,
        quick=True,
    ),
    KillPoint(
        "ticket-script-then-revert",
        "ticket",
        lambda w: (w.repo / ".asd/ticket-started").exists() and w.running("bash"),
        hang_ticket=True,
        leaves_running=True,
        until_takeover=True,
        recover="revert",
    ),
    KillPoint(
        "revert-restore",
        "revert",
        lambda w: w.began("revert", "test_restore") and w.set_aside_done(),
        mode="revert",
        big_volume=True,
        recover="revert",
        quick=True,
    ),
    KillPoint(
        "revert-dump-restore",
        "revert",
        lambda w: w.began("revert", "test_restore") and w.set_aside_done() and w.running("exec"),
        mode="revert",
        slow_restore=True,
        recover="revert",
        leaves_running=True,
        until_takeover=True,
    ),
    # Step boundaries: just as the step begins.
    KillPoint("began-migrate", "migrate", began("migrate", "test_migrate"), quick=True),
    # A health round takes a second: on a loaded machine the two quick checks could end
    # the run in the 20 ms between two looks at the log.
    KillPoint(
        "began-verify", "verify", began("verify", "test_image"), slow_health=True, quick=True
    ),
    KillPoint("began-preflight", "prepare", began("prepare", "test_preflight")),
    KillPoint("began-pull", "prepare", began("prepare", "test_pull")),
    KillPoint("began-changed-services", "prepare", began("prepare", "test_changed_services")),
    KillPoint("began-backup", "prepare", began("prepare", "test_backup")),
    KillPoint("began-ready", "migrate", began("migrate", "test_ready")),
    KillPoint("began-ticket", "ticket", began("ticket", "test_ticket_scripts")),
    KillPoint(
        "began-ticket-then-revert",
        "ticket",
        began("ticket", "test_ticket_scripts"),
        recover="revert",
    ),
    KillPoint("began-health", "verify", began("verify", "test_health"), slow_health=True),
    KillPoint(
        "began-revert-preflight",
        "revert",
        began("revert", "test_revert_preflight"),
        mode="revert",
        recover="revert",
    ),
    KillPoint(
        "began-revert-code",
        "revert",
        began("revert", "test_revert_code"),
        mode="revert",
        recover="revert",
    ),
    KillPoint(
        "began-restore", "revert", began("revert", "test_restore"), mode="revert", recover="revert"
    ),
    KillPoint(
        "began-push", "revert", began("revert", "test_push"), mode="revert", recover="revert"
    ),
    KillPoint(
        "began-reverted-health",
        "revert",
        began("revert", "test_reverted_health"),
        mode="revert",
        recover="revert",
        slow_health=True,
    ),
]


def _cases() -> list[object]:
    return [
        pytest.param(p, id=p.id, marks=() if p.quick else (pytest.mark.full_only,)) for p in POINTS
    ]


# -- the scenario --------------------------------------------------------------------------


def _sh(svc: Service, script: str) -> str:
    done = subprocess.run(
        ["docker", "exec", f"{svc.project}-{svc.name}-1", "sh", "-c", script],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _snapshot(svc: Service) -> str:
    """Every entry of the volume: name, type, mode, owner, size, and each file's sha256."""
    return _sh(
        svc,
        f"cd {DATA} && /bin/busybox find . | /bin/busybox sort | while read f; do"
        " /bin/busybox stat -c '%n %F %a %u:%g %s' \"$f\";"
        ' [ -f "$f" ] && /bin/busybox sha256sum "$f"; done; true',
    )


def _prepare(deploy: DeployRepo, make_service, point: KillPoint) -> tuple[Service, str]:
    """api at tag 1 on prod with data in its volume; tag 2 and a ticket script merged."""
    backup: dict[str, object] = {"volumes": [KEY]}
    if point.slow_dump:
        backup["dump"] = SLOW_DUMP
    if point.slow_restore:
        backup["dump"] = SLOW_RESTORE
    if point.when_stopped:
        backup["when"] = "stopped"
    options = None
    if point.bound_volume:
        device = deploy.root / "bound-volume"
        device.mkdir()
        options = {"type": "none", "o": "bind", "device": str(device)}
    (svc,) = running_on_prod(
        deploy,
        make_service,
        ("api",),
        volumes=(KEY,),
        backup=backup,
        compose=point.compose,
        volume_options=options,
    ).values()
    if point.slow_health:
        svc.health = {
            "endpoint": svc.endpoint,
            "command": ["/bin/busybox", "sleep", "1"],
            "timeout": svc.timeout,
        }
        deploy.write_service(svc)
        deploy.commit("api: a health round takes a second")
        deploy.push()
        subprocess.run(["git", "-C", str(deploy.prod), "pull", "-q"], check=True)
    if point.slow_pull:
        hook = deploy.prod / ".git/hooks/post-merge"
        hook.write_text(f"#!/bin/sh\ntouch {deploy.prod}/.asd/pulled\nsleep 20\n")
        hook.chmod(0o755)
        (deploy.prod / ".asd").mkdir(exist_ok=True)
    _sh(svc, f"echo precious > {DATA}/record.txt; mkdir -p {DATA}/sub; echo x > {DATA}/sub/y")
    if point.big_volume:
        _sh(svc, f"/bin/busybox dd if=/dev/zero of={DATA}/big bs=1M count=300 2>/dev/null")
    before = _snapshot(svc)
    svc.tag = "2"
    make_service("api", "2")
    if point.slow_start:
        svc.compose = {**point.compose, "command": SLOW_START}
    deploy.write_service(svc)
    script = TICKET_SCRIPT.format(container=f"{svc.project}-api-1", data=DATA)
    deploy.write(f"releases/{TICKET}-migrate.sh", script)
    deploy.merge_feature(f"feature/{TICKET}", f"ticket {TICKET}: api to tag 2")
    return svc, before


def _start(repo: Path, mode: str, out: Path, *args: str) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "pytest", "-m", mode, "--ticket", TICKET, *engine.TEST_INI]
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    with out.open("wb") as sink:
        return subprocess.Popen(
            [*argv, *args], cwd=repo, env=env, stdout=sink, stderr=subprocess.STDOUT
        )


def _kill_when(proc: subprocess.Popen[bytes], watch: Watch, point: KillPoint, out: Path) -> None:
    deadline = time.monotonic() + REACH
    while not point.when(watch):
        if proc.poll() is not None:
            pytest.fail(f"the run ended before {point.id}:\n{out.read_text()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the run never reached {point.id}:\n{out.read_text()}")
        time.sleep(0.02)
    proc.kill()  # SIGKILL, to the engine alone: what it started lives on
    proc.wait()


# -- what a crash may leave, and may not ---------------------------------------------------


def _check_the_wreck(watch: Watch, point: KillPoint, killed_pid: int) -> lock.Holder:
    state_path = watch.repo / ".asd/workspace/releases" / f"{TICKET}.env"
    state = State.from_text(state_path.read_text(), str(state_path))
    assert state.phase == point.phase, state.to_text()

    text = watch.log.read_text()
    assert text.endswith("\n"), "the log's last line is whole"
    for line in text.splitlines():
        fields = eventlog.parse_line(line)
        assert {"time", "ticket", "phase", "event"} <= fields.keys(), line
        assert fields["ticket"] == TICKET, line

    root = watch.backups.parent
    for service, stamp in state.backups.items():
        verify(root, service, stamp)  # raises unless every checksum matches the record
    for directory in watch.backups.glob("*"):
        if not (directory / RECORD_NAME).exists():
            assert directory.name not in state.backups.values(), f"{directory} is incomplete"

    holder = lock.read(watch.lock_path)
    assert holder is not None and holder.pid == killed_pid, "the lock names the dead run"
    return holder


def _recover(repo: Path, point: KillPoint) -> engine.Run:
    if point.recover == "revert":
        return engine.run(repo, TICKET, mode="revert")
    run = engine.run(repo, TICKET)
    if run.rc != 0:
        # Refused as a release in progress: the message names the command that goes on.
        assert "in the middle of a release" in run.output, run
        resume = re.search(r"--from=(\w+)", run.output)
        assert resume, run
        run = engine.run(repo, TICKET, resume.group(0))
    return run


def _helpers_of(repo: Path) -> list[str]:
    done = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={HELPER_REPO_LABEL}={repo}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.split()


@pytest.mark.reliability("kill", "SIGKILL of the engine, then the next command recovers")
@pytest.mark.parametrize("point", _cases())
def test_a_kill_9_loses_nothing_and_the_next_command_recovers(
    point: KillPoint, deploy: DeployRepo, make_service, tmp_path: Path
) -> None:
    svc, before = _prepare(deploy, make_service, point)
    repo = deploy.prod
    watch = Watch(repo, svc)
    if point.mode == "revert":
        released = engine.run(repo, TICKET)
        assert released.rc == 0, released
    if point.hang_ticket:
        (repo / ".asd").mkdir(exist_ok=True)
        (repo / ".asd/hang").write_text("")
    out = tmp_path / "killed-run.out"
    proc = _start(repo, point.mode, out, "-o", f"release_stop_timeout={point.stop_timeout}")
    holder: lock.Holder | None = None
    try:
        _kill_when(proc, watch, point, out)
        holder = _check_the_wreck(watch, point, proc.pid)
        left = [p for p in holder.left_running(leftovers.scan()) if p.pid != proc.pid]
        if point.leaves_running:
            assert left, f"a kill -9 ends the engine alone; its command runs on ({point.id})"
        if point.half_backup:
            assert incomplete(watch.backups.parent), "a backup was cut short"
        if point.helper:
            assert _helpers_of(repo), "its throwaway container was left holding the volume"
        # What held the run up is let go, as the operator would fix what they found.
        (repo / ".asd/hang").unlink(missing_ok=True)

        run = _recover(repo, point)
        assert run.rc == 0, run
        if point.recover == "revert":
            assert (run.state.phase, run.state.phase_status) == ("revert", "done"), run
            assert _snapshot(svc) == before, "the data is back byte for byte"
        else:
            assert (run.state.phase, run.state.phase_status) == ("verify", "done"), run
        if point.mode == "revert" and watch.set_aside_done():
            # The killed run set aside what stood there before the revert: the rerun
            # keeps that one to undo with, and does not set aside what it half restored.
            assert len(list(watch.backups.glob("*/replaced-*"))) == 1, run
        log = watch.log.read_text()
        assert "action=took-over-stale" in log, log
        assert holder.left_running(leftovers.scan()) == [], "the takeover ended what was left"
        if point.until_takeover:
            assert "action=ended-leftovers" in log, log
            assert "ended what that run left running" in run.output, run
        assert _helpers_of(repo) == [], "no throwaway container of the dead run is left"
        assert incomplete(watch.backups.parent) == [], "no half backup is left"
        if point.half_backup:
            assert "action=removed-incomplete-backups" in log, log
        if point.helper:
            assert "action=removed-helpers" in log, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        # Whatever the outcome, nothing the dead run started may outlive the test.
        holder = holder or lock.read(watch.lock_path)
        if holder is not None:
            leftovers.end(holder.left_running(leftovers.scan()), grace=1)
        for helper in _helpers_of(repo):
            subprocess.run(["docker", "rm", "-f", helper], capture_output=True, check=False)
