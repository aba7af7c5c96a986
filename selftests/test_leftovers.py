"""What a killed run left running: the rule that tells its processes apart (pure), and
a real takeover that ends a real process group."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from release_phases import eventlog, leftovers, lock
from release_phases.backup.record import RECORD_NAME, incomplete
from release_phases.host.shell import Runner
from release_phases.journal import Journal, Paths, end_leftovers
from release_phases.leftovers import Proc, decide

STAT = "4242 (bash) S 1 4242 4242 0 -1 4194560 120 0 0 0 0 0 0 0 20 0 1 0 98765 8654848 800"


def test_a_stat_line_gives_pid_group_and_start_time():
    assert leftovers.parse_stat(STAT) == Proc(4242, 4242, 98765, "S", "bash")


def test_a_command_name_with_spaces_and_parentheses_is_read_whole():
    line = STAT.replace("(bash)", "(my (odd) name)")
    assert leftovers.parse_stat(line) == Proc(4242, 4242, 98765, "S", "my (odd) name")


@pytest.mark.parametrize("text", ["", "4242 (bash", "x (bash) S 1 2", "4242 (bash) S 1 x"])
def test_what_is_not_a_stat_line_is_none(text):
    assert leftovers.parse_stat(text) is None


def test_this_process_is_read_from_proc():
    me = leftovers.read(os.getpid())
    assert me is not None and me.pid == os.getpid() and me.pgid == os.getpgid(0)
    assert leftovers.read(os.getpid()) == me, "the start time is stable"


# (group id, leader start) recorded; what runs now; the pids that are the dead run's.
CASES = {
    "leader alive, same start: its whole group": (
        [(100, 50)],
        [Proc(100, 100, 50, "S", "bash"), Proc(101, 100, 60, "S", "sleep")],
        [100, 101],
    ),
    "leader's pid reused by another process: nothing": (
        [(100, 50)],
        [Proc(100, 100, 900, "S", "nginx"), Proc(101, 100, 901, "S", "nginx")],
        [],
    ),
    "leader exited, its child lives on in the group": (
        [(100, 50)],
        [Proc(101, 100, 60, "S", "sleep")],
        [101],
    ),
    "leader exited; a process older than it in that group is not its descendant": (
        [(100, 50)],
        [Proc(101, 100, 40, "S", "old")],
        [],
    ),
    "other groups are never touched": (
        [(100, 50)],
        [Proc(100, 100, 50, "S", "bash"), Proc(200, 200, 55, "S", "other")],
        [100],
    ),
    "a zombie is already dead": (
        [(100, 50)],
        [Proc(100, 100, 50, "Z", "bash"), Proc(101, 100, 60, "S", "sleep")],
        [101],
    ),
    "nothing recorded: nothing": ([], [Proc(100, 100, 50, "S", "bash")], []),
}


@pytest.mark.parametrize("groups,procs,expected", CASES.values(), ids=CASES.keys())
def test_which_processes_belong_to_the_dead_run(groups, procs, expected):
    assert [p.pid for p in decide(groups, None, procs)] == expected


def test_the_engine_itself_is_ended_only_when_its_start_time_matches():
    procs = [Proc(7, 1, 30, "S", "python3")]
    assert [p.pid for p in decide([], (7, 30), procs)] == [7]
    assert decide([], (7, 31), procs) == [], "pid 7 is another process now"


def test_a_holder_on_another_host_names_no_process_here():
    holder = lock.Holder("1", 100, "elsewhere", "now", 50, ((100, 50),))
    assert holder.left_running([Proc(100, 100, 50, "S", "bash")]) == []


def test_end_sends_sigterm_then_sigkill_to_what_is_still_there():
    sent: list[tuple[int, int]] = []
    stubborn = Proc(1, 1, 1, "S", "stubborn")
    polite = Proc(2, 1, 1, "S", "polite")

    def alive(p: Proc) -> bool:  # polite ends on SIGTERM, stubborn does not
        return not (p is polite and (2, signal.SIGTERM) in sent)

    killed = leftovers.end(
        [stubborn, polite], grace=0.3, alive=alive, kill=lambda pid, sig: sent.append((pid, sig))
    )
    assert killed == [stubborn]
    assert sent == [(1, signal.SIGTERM), (2, signal.SIGTERM), (1, signal.SIGKILL)]


# -- the lock file names the groups, and a takeover ends them -----------------------------

#: Holds the lock, starts a command in its own session as the Runner does, names it.
HOLDER = textwrap.dedent(
    """
    import subprocess, sys, time
    from pathlib import Path
    from release_phases import lock
    held = lock.acquire(Path(sys.argv[1]), "111")
    child = subprocess.Popen(["sh", "-c", "sleep 307 & wait"], start_new_session=True)
    held.started(child.pid)
    print(child.pid, flush=True)
    time.sleep(120)
    """
)


def _group_alive(pgid: int) -> bool:
    return any(p.pgid == pgid and p.state != "Z" for p in leftovers.scan())


def test_the_lock_names_a_commands_group_until_it_ends(tmp_path):
    path = tmp_path / ".lock"
    held = lock.acquire(path, "1")
    start = leftovers.start_time(os.getpid())
    held.started(os.getpid())
    assert lock.read(path).groups == ((os.getpid(), start),)
    held.ended(os.getpid())
    assert lock.read(path).groups == ()
    assert path.read_text().strip() == path.read_text(), "cut to size after the shorter record"
    lock.release(held)


@pytest.mark.reliability(
    "kill", "SIGKILL of a lock holder with a command running: the takeover ends its group"
)
def test_a_takeover_ends_the_group_the_killed_holder_left_running(tmp_path):
    path = tmp_path / ".lock"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True
    )
    child = int(proc.stdout.readline())
    proc.kill()
    proc.wait()
    try:
        assert _group_alive(child), "a kill -9 leaves the command running"
        got = lock.acquire(path, "222")
        assert got.took_over is not None and got.took_over.groups[0][0] == child
        taken = end_leftovers(got.took_over, grace=2)
        lock.release(got)
        assert {p.comm for p in taken.ended} == {"sh", "sleep"}, taken
        deadline = time.monotonic() + 5
        while _group_alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _group_alive(child), "the takeover ended the whole group"
        assert any("ended what that run left running" in line for line in taken.lines())
    finally:
        # Nothing of the test may outlive it, whatever the outcome above.
        if _group_alive(child):
            os.killpg(child, signal.SIGKILL)


def test_a_takeover_leaves_alone_a_process_that_reuses_a_recorded_pid(tmp_path):
    """The recorded group's start time does not match the process that has the pid now."""
    other = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        start = leftovers.start_time(other.pid)
        assert start is not None
        holder = lock.Holder("1", -1, lock.me("x").host, "then", None, ((other.pid, start - 1),))
        taken = end_leftovers(holder, grace=0.2)
        assert taken.ended == () and other.poll() is None, "left running"
    finally:
        other.kill()
        other.wait()


def test_old_lock_records_without_groups_still_read(tmp_path):
    path = Path(tmp_path / ".lock")
    path.write_text('{"ticket": "9", "pid": 5, "host": "h", "started": "t"}')
    got = lock.acquire(path, "3")
    assert got.took_over == lock.Holder("9", 5, "h", "t")
    lock.release(got)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def started(self, pid: int) -> None:
        self.calls.append(("started", pid))

    def ended(self, pid: int) -> None:
        self.calls.append(("ended", pid))


@pytest.mark.parametrize("how", ["run", "read"])
def test_the_runner_names_each_commands_group_as_it_starts_and_once_it_is_reaped(how):
    recorder = Recorder()
    runner = Runner(children=recorder)
    if how == "run":
        runner.run(["sh", "-c", "exit 0"])
    else:
        runner.read(["sh", "-c", "exit 0"], timeout=10)
    (started, pid), (ended, same) = recorder.calls
    assert (started, ended) == ("started", "ended") and pid == same > 0


def test_backup_directories_without_a_record_are_the_incomplete_ones(tmp_path):
    root = tmp_path / "backups"
    whole = root / "api" / "20260101_000000"
    half = root / "api" / "20260101_000100"
    whole_aside = whole / "replaced-20260102_000000"
    half_aside = whole / "replaced-20260102_000100"
    half_inside_half = half / "replaced-20260102_000200"
    for directory in (whole, half, whole_aside, half_aside, half_inside_half):
        directory.mkdir(parents=True)
    for directory in (whole, whole_aside):
        (directory / RECORD_NAME).write_text("{}")
    (root / "api" / "notes").mkdir()  # not named like a backup: not the engine's
    assert sorted(incomplete(root)) == sorted([half, half_aside])
    assert incomplete(tmp_path / "none") == []


@pytest.mark.reliability(
    "kill", "a stale lock naming a running command and a half backup: the journal ends and removes"
)
def test_the_journal_ends_what_a_dead_run_left_and_logs_it(tmp_path):
    paths = Paths(tmp_path, "7")
    half = paths.backups / "api" / "20260101_000000"
    half.mkdir(parents=True)
    (half / ".02-volume-data.tar.x.partial").write_bytes(b"cut short")
    left = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        start = leftovers.start_time(left.pid)
        assert start is not None
        dead = lock.Holder("6", 1, lock.me("x").host, "then", None, ((left.pid, start),))
        paths.lock.parent.mkdir(parents=True)
        paths.lock.write_text(json.dumps(asdict(dead)))
        journal = Journal(paths, None, branch="main")
        journal.open(fresh_release=True, phase="prepare")
        journal.close()
        assert left.wait(timeout=5) == -signal.SIGTERM, "ended with SIGTERM"
    finally:
        if left.poll() is None:
            left.kill()
            left.wait()
    assert not half.exists(), "the half backup was removed"
    events = [eventlog.parse_line(line) for line in paths.log.read_text().splitlines()]
    actions = {e["action"]: e for e in events if e["event"] == "lock"}
    assert actions.keys() == {"took-over-stale", "ended-leftovers", "removed-incomplete-backups"}
    assert actions["ended-leftovers"]["processes"] == f"{left.pid}:sleep"
    assert actions["removed-incomplete-backups"]["backups"] == "api/20260101_000000"
