"""The append-only event log, `.asd/workspace/releases/<ticket>.log`.

One line per event, `TIME ticket=T phase=P event=E key=value ...`, flushed and
fsynced as it happens so a post-mortem after a crash still sees the last event.
A field's value has the run's secrets masked (`masking`); the time, ticket, phase
and event are the engine's own words.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

from release_phases import clock
from release_phases.masking import mask

_PLAIN = re.compile(r"[A-Za-z0-9._:/@+=,-]+")


def _value(value: object) -> str:
    text = mask(str(value))
    if _PLAIN.fullmatch(text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")
    return f'"{escaped}"'


def format_line(
    ticket: str, phase: str, event: str, at: str | None = None, **fields: object
) -> str:
    parts = [at or clock.iso(), f"ticket={ticket}", f"phase={phase}", f"event={event}"]
    parts += [f"{k}={_value(v)}" for k, v in fields.items() if v is not None]
    return " ".join(parts)


def parse_line(line: str) -> dict[str, str]:
    """The fields of one line, with `time` for the leading timestamp."""
    first, _, rest = line.strip().partition(" ")
    fields = {"time": first}
    for token in shlex.split(rest):
        key, _, value = token.partition("=")
        fields[key] = value
    return fields


def append(path: Path, line: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
