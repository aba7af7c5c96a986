"""What a run killed with SIGKILL left running, and ending it.

Every command the engine runs (a hook, a ticket script, `docker compose up`, a dump)
starts in a process group of its own (`shell.Runner`), and the lock file names each
group while it runs. A kill -9 of the engine ends only the engine: those groups run
on, a ticket script may still be changing data. The run that takes the stale lock
over ends them before it does anything else.

A pid names a process only until it exits; the kernel hands the number out again. So
each group is recorded with its leader's start time (`/proc/<pid>/stat`, clock ticks
since boot), and a process is ended only when it can be told to be the one recorded:

- the leader is alive with the recorded start time: its whole group is ours;
- the leader is gone (it exited after the kill) but processes of its group live on,
  a script's background child say: they are ended when none started before the
  leader did, since a descendant cannot be older than its ancestor. What this cannot
  tell apart, stated plainly: the group's id handed to a new process that made
  itself a group leader and exited again, leaving children, all between the kill
  and the takeover.

`decide` is that rule, pure; `scan` reads `/proc`; `end` signals. Without `/proc`
(not Linux) nothing is recorded as provable and nothing is ended.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
#: Seconds the leftovers get to end after SIGTERM before SIGKILL.
GRACE = 3.0


@dataclass(frozen=True)
class Proc:
    """One process as /proc/<pid>/stat shows it."""

    pid: int
    pgid: int
    #: Clock ticks after boot at which it started; stable for the process's life.
    start: int
    #: R, S, D, Z (zombie: already dead, only waiting for its parent) ...
    state: str
    comm: str


def parse_stat(text: str) -> Proc | None:
    """A /proc/<pid>/stat line; None when it cannot be read as one."""
    # comm is in parentheses and may itself hold spaces and parentheses: split at the last.
    head, sep, tail = text.rpartition(")")
    pid_text, _, comm = head.partition(" (")
    fields = tail.split()
    if not sep or len(fields) < 20:
        return None
    try:
        return Proc(int(pid_text), int(fields[2]), int(fields[19]), fields[0], comm)
    except ValueError:
        return None


def read(pid: int, proc: Path = PROC) -> Proc | None:
    """The process `pid` now, or None when there is none (or no /proc)."""
    try:
        return parse_stat((proc / str(pid) / "stat").read_text(errors="replace"))
    except OSError:
        return None


def start_time(pid: int, proc: Path = PROC) -> int | None:
    found = read(pid, proc)
    return found.start if found else None


def scan(proc: Path = PROC) -> list[Proc]:
    """Every process /proc shows now."""
    found = []
    try:
        names = [p.name for p in proc.iterdir() if p.name.isdigit()]
    except OSError:
        return []
    for name in names:
        seen = read(int(name), proc)
        if seen is not None:
            found.append(seen)
    return found


def decide(
    groups: Iterable[tuple[int, int]], engine: tuple[int, int] | None, procs: Iterable[Proc]
) -> list[Proc]:
    """The processes that belong to a dead run, given what its lock file recorded.

    ``groups`` are (group id, leader's start time), ``engine`` the engine's own (pid,
    start time); ``procs`` is what runs now. Zombies are already dead and are left out.
    """
    live = [p for p in procs if p.state != "Z"]
    by_pid = {p.pid: p for p in live}
    doomed: dict[int, Proc] = {}
    if engine is not None:
        pid, start = engine
        found = by_pid.get(pid)
        if found is not None and found.start == start:
            doomed[pid] = found
    for pgid, start in groups:
        leader = by_pid.get(pgid)
        if leader is not None and leader.start != start:
            continue  # the id now names another process: not ours
        for p in live:
            if p.pgid == pgid and p.start >= start:
                doomed[p.pid] = p
    return sorted(doomed.values(), key=lambda p: p.pid)


def end(
    doomed: Sequence[Proc],
    *,
    grace: float = GRACE,
    alive: Callable[[Proc], bool] | None = None,
    kill: Callable[[int, int], None] = os.kill,
) -> list[Proc]:
    """SIGTERM each, then SIGKILL those still there after ``grace``; returns those killed
    with SIGKILL. Each is signalled by pid, after its start time is checked again."""
    still = alive or _still_the_same
    for p in doomed:
        _signal(p, signal.SIGTERM, still, kill)
    deadline = time.monotonic() + grace
    left = [p for p in doomed if still(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [p for p in left if still(p)]
    for p in left:
        _signal(p, signal.SIGKILL, still, kill)
    return left


def _still_the_same(p: Proc) -> bool:
    now = read(p.pid)
    return now is not None and now.start == p.start and now.state != "Z"


def _signal(
    p: Proc, signum: int, still: Callable[[Proc], bool], kill: Callable[[int, int], None]
) -> None:
    if still(p):
        # Gone in between, or not ours to signal: either way nothing is left to do.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            kill(p.pid, signum)


def describe(procs: Iterable[Proc]) -> str:
    """`1234:bash 1240:sleep`, for the log and the terminal."""
    return " ".join(f"{p.pid}:{p.comm}" for p in procs)
