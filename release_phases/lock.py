"""The release lock, `.asd/workspace/releases/.lock`: one release or revert at a time.

The lock is a file created with O_EXCL holding who took it. A holder that has
died (its pid gone, or the pid now belongs to another process: the recorded
process start time differs) is stale; the stale file is renamed away, which only
one contender can do, and the lock is taken again the normal way.
"""

from __future__ import annotations

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
    #: /proc/<pid>/stat start time, so a recycled pid is not taken for the holder.
    proc_start: str = ""

    def describe(self) -> str:
        return f"ticket {self.ticket} (pid {self.pid} on {self.host}, since {self.started})"


def _proc_start(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # The command name may hold spaces and parentheses; fields resume after the last ')'.
    return stat.rsplit(")", 1)[1].split()[19]


def me(ticket: str) -> Holder:
    pid = os.getpid()
    return Holder(ticket, pid, socket.gethostname(), clock.iso(), _proc_start(pid))


def is_alive(holder: Holder) -> bool:
    if holder.host != socket.gethostname():
        # Another host's process cannot be checked from here: assume it lives.
        return True
    current = _proc_start(holder.pid)
    if not current:
        return False
    return not holder.proc_start or current == holder.proc_start


def read(path: Path) -> Holder | None:
    try:
        data = json.loads(path.read_text())
        return Holder(**data)
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):
        # A lock file cut short by a crash between create and write: treat as stale.
        return Holder("?", -1, socket.gethostname(), "?")


@dataclass
class Acquired:
    holder: Holder
    #: The stale holder that was taken over, for the log.
    took_over: Holder | None = None


def acquire(path: Path, ticket: str) -> Acquired:
    path.parent.mkdir(parents=True, exist_ok=True)
    mine = me(ticket)
    took_over = None
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = read(path)
            if holder is None:
                continue
            if holder.pid == mine.pid and holder.host == mine.host:
                return Acquired(mine)
            if is_alive(holder):
                raise ReleaseError(
                    f"another release holds the lock {path}: {holder.describe()}",
                    untouched="everything: this run changed nothing",
                    next_command="wait for it to finish (see its log under "
                    f".asd/workspace/releases/{holder.ticket}.log), then rerun",
                ) from None
            aside = path.with_name(f"{path.name}.stale-{mine.pid}")
            try:
                os.rename(path, aside)
            except FileNotFoundError:
                continue
            aside.unlink(missing_ok=True)
            took_over = holder
            continue
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(mine), fh)
            fh.flush()
            os.fsync(fh.fileno())
        return Acquired(mine, took_over)
    raise ReleaseError(f"could not take the lock {path}: it kept changing hands")


def release(path: Path, holder: Holder) -> None:
    """Remove the lock if it is still ours."""
    current = read(path)
    if current is not None and current.pid == holder.pid and current.host == holder.host:
        path.unlink(missing_ok=True)
