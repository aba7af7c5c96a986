"""The one place where commands run.

Everything else builds commands as data (argv lists) so they can be shown,
logged and unit-tested without a host; this module executes them.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from release_phases.errors import ReleaseError

Argv = Sequence[str]


def render(argv: Argv) -> str:
    """The argv as an operator would type it."""
    return shlex.join(list(argv))


@dataclass
class Result:
    argv: list[str]
    returncode: int
    output: str
    duration: float
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output.splitlines()[-lines:])


class CommandFailed(ReleaseError):
    def __init__(self, result: Result, *, untouched: str = "", next_command: str = "") -> None:
        how = (
            f"timed out after {result.duration:.0f}s"
            if result.timed_out
            else f"exited {result.returncode}"
        )
        super().__init__(
            f"`{render(result.argv)}` {how}:\n{result.tail()}",
            untouched=untouched,
            next_command=next_command,
            rc=result.returncode if result.returncode > 0 else 1,
        )
        self.result = result


@dataclass
class Runner:
    """Runs argv lists; ``stream`` echoes output live (to the real terminal)."""

    echo: bool = False
    history: list[Result] = field(default_factory=list)

    def run(
        self,
        argv: Argv,
        *,
        cwd: Path | str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        stream: bool = False,
        check: bool = True,
        stdin: str | None = None,
    ) -> Result:
        argv = [str(a) for a in argv]
        full_env = None if env is None else {**os.environ, **env}
        start = time.monotonic()
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=full_env,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,
        )
        chunks: list[str] = []
        timed_out = False
        try:
            if stream and stdin is None:
                out = _stream(proc, chunks, deadline=None if timeout is None else start + timeout)
                timed_out = out is None
            else:
                out, _ = proc.communicate(input=stdin, timeout=timeout)
                chunks.append(out or "")
        except subprocess.TimeoutExpired:
            timed_out = True
        if timed_out:
            _kill_group(proc)
            rest, _ = proc.communicate()
            chunks.append(rest or "")
        result = Result(
            argv=argv,
            returncode=proc.returncode if not timed_out else 124,
            output="".join(chunks),
            duration=time.monotonic() - start,
            timed_out=timed_out,
        )
        self.history.append(result)
        if check and not result.ok:
            raise CommandFailed(result)
        return result


def _stream(proc: subprocess.Popen[str], chunks: list[str], deadline: float | None) -> str | None:
    """Copy output to stderr line by line; None when the deadline passed."""
    import selectors

    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    while True:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return None
        if not sel.select(timeout=remaining):
            continue
        line = proc.stdout.readline()
        if not line:
            break
        chunks.append(line)
        sys.__stderr__.write(line)
        sys.__stderr__.flush()
    proc.wait()
    return ""


def _kill_group(proc: subprocess.Popen[str]) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


DEFAULT = Runner()


def run(argv: Argv, **kwargs: object) -> Result:
    """Run with the process-wide runner (see ``Runner.run``)."""
    return DEFAULT.run(argv, **kwargs)  # type: ignore[arg-type]
