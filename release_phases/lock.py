"""The release lock, `.asd/workspace/releases/.lock`: one release or revert at a time.

The lock is an flock(2) on that file, held for the whole run: the kernel drops it
when the process ends, however it ends, so two runs can never both hold it and a
crashed run never blocks the next. The file's content says who holds it (ticket,
pid, host, start time) for the refusal message; content found by a run that did
get the lock was left by a run that died holding it, and is reported as a stale
lock taken over.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

from release_phases import clock
from release_phases.errors import ReleaseError


@dataclass(frozen=True)
class Holder:
    ticket: str
    pid: int
    host: str
    started: str

    def describe(self) -> str:
        return f"ticket {self.ticket} (pid {self.pid} on {self.host}, since {self.started})"


def me(ticket: str) -> Holder:
    return Holder(ticket, os.getpid(), socket.gethostname(), clock.iso())


def _parse(text: str) -> Holder | None:
    if not text.strip():
        return None
    try:
        return Holder(**json.loads(text))
    except (ValueError, TypeError):
        return Holder("?", -1, "?", "?")  # cut short by a crash mid-write


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
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(asdict(mine)).encode(), 0)
    os.fsync(fd)
    return Acquired(mine, fd, stale)


def release(held: Acquired) -> None:
    """Say nobody holds it, then let go (closing the file drops the flock)."""
    os.ftruncate(held.fd, 0)
    os.fsync(held.fd)
    os.close(held.fd)
