"""The release lock, `.asd/workspace/releases/.lock`: one release or revert at a time.

The lock is an flock(2) on that file, held for the whole run: the kernel drops it
when the process ends, however it ends, so two runs can never both hold it and a
crashed run never blocks the next. The file's content says who holds it (ticket,
pid, host, start time) for the refusal message; content found by a run that did
get the lock was left by a run that died holding it, and is reported as a stale
lock taken over.

The file also names what the run has running: its own pid and the process group of
each command it started (with start times, see `leftovers`), rewritten as commands
start and end. A run that takes a stale lock over ends what is still running of
those before it does anything else.

The content is rewritten in place (the flock belongs to the file, so it cannot be
replaced by a rename): the new text is written over the old, padded with spaces to
the old length, and only then is the file cut to size. JSON allows the trailing
spaces, so at every moment the file holds one whole record, whichever.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from release_phases import clock, leftovers
from release_phases.errors import ReleaseError


@dataclass(frozen=True)
class Holder:
    ticket: str
    pid: int
    host: str
    started: str
    #: The holder's start time in clock ticks after boot (None: unknown, no /proc).
    pid_start: int | None = None
    #: The process groups of the commands it is running: (group id, leader's start time).
    groups: tuple[tuple[int, int], ...] = field(default=())

    def describe(self) -> str:
        return f"ticket {self.ticket} (pid {self.pid} on {self.host}, since {self.started})"

    def left_running(self, procs: list[leftovers.Proc]) -> list[leftovers.Proc]:
        """Of ``procs`` (what runs now), those this holder left running. A holder on
        another host (a lock file on shared storage) names pids of that host: none."""
        if self.host != socket.gethostname():
            return []
        engine = (self.pid, self.pid_start) if self.pid_start is not None else None
        return leftovers.decide(self.groups, engine, procs)


def me(ticket: str) -> Holder:
    pid = os.getpid()
    return Holder(ticket, pid, socket.gethostname(), clock.iso(), leftovers.start_time(pid))


def _parse(text: str) -> Holder | None:
    if not text.strip():
        return None
    try:
        fields = json.loads(text)
        fields["groups"] = tuple((int(g), int(s)) for g, s in fields.get("groups", ()))
        return Holder(**fields)
    except (ValueError, TypeError, AttributeError):
        return Holder("?", -1, "?", "?")  # not a record this version wrote


def read(path: Path) -> Holder | None:
    """Who the file says holds (or last held) the lock; None when it says nobody."""
    try:
        return _parse(path.read_text())
    except FileNotFoundError:
        return None


@dataclass
class Acquired:
    holder: Holder
    fd: int
    #: What a run that died holding the lock left in the file, for the log.
    took_over: Holder | None = None
    #: Commands start and end from several threads at once under --parallel: each
    #: change of the record is made whole before the next.
    _changing: threading.Lock = field(default_factory=threading.Lock, repr=False)
    #: Let go (`release`): the file descriptor is closed, a late command is not noted.
    released: bool = False

    def started(self, pid: int) -> None:
        """A command started in process group ``pid``: name it in the file."""
        start = leftovers.start_time(pid)
        if start is None:
            return  # gone already, or no /proc: nothing a later run could check it by
        with self._changing:
            if self.released:
                return
            groups = (*self.holder.groups, (pid, start))
            self._write(replace(self.holder, groups=groups))

    def ended(self, pid: int) -> None:
        """The command of process group ``pid`` was reaped: no longer ours to end."""
        with self._changing:
            if self.released:
                return
            groups = tuple(g for g in self.holder.groups if g[0] != pid)
            if groups != self.holder.groups:
                self._write(replace(self.holder, groups=groups))

    def _write(self, holder: Holder) -> None:
        # No fsync: the record matters after a kill of this process, and what it wrote
        # is then in the page cache all the same; a crash of the machine ends its
        # processes too. Commands start often enough that a sync each would cost.
        _overwrite(self.fd, _text(holder))
        self.holder = holder


def _text(holder: Holder) -> bytes:
    return json.dumps(asdict(holder)).encode()


def _overwrite(fd: int, data: bytes) -> None:
    """Replace the file's content without a moment in which it holds no whole record."""
    old = os.fstat(fd).st_size
    os.pwrite(fd, data.ljust(old, b" "), 0)
    os.ftruncate(fd, len(data))


def acquire(path: Path, ticket: str) -> Acquired:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        holder = read(path)
        who = holder.describe() if holder else "a run that is just starting"
        raise ReleaseError(
            f"another release holds the lock {path}: {who}",
            untouched="everything: this run changed nothing",
            next_command="wait for it to finish"
            + (f" (see .asd/workspace/releases/{holder.ticket}.log)" if holder else "")
            + ", then run this command again",
        ) from None
    stale = _parse(os.pread(fd, 65536, 0).decode(errors="replace"))
    mine = me(ticket)
    _overwrite(fd, _text(mine))
    os.fsync(fd)
    return Acquired(mine, fd, stale)


def release(held: Acquired) -> None:
    """Say nobody holds it, then let go (closing the file drops the flock)."""
    with held._changing:
        held.released = True
        os.ftruncate(held.fd, 0)
        os.fsync(held.fd)
        os.close(held.fd)
