"""The one place where commands run.

Everything else builds commands as data (argv lists) so they can be shown,
logged and unit-tested without a host; this module executes them.
"""

from __future__ import annotations

import codecs
import contextlib
import fcntl
import os
import select
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol, TextIO, TypeVar

from release_phases import masking, progress
from release_phases.errors import ReleaseError

Argv = Sequence[str]
T = TypeVar("T")
#: Bytes of the pipe a command's stdout is read from by `Runner.pipe`: Linux's default
#: (64 KiB) makes a reader of gigabytes switch with the writer sixteen times a MiB.
PIPE_SIZE = 1024 * 1024


def render(argv: Argv) -> str:
    """The argv as an operator would type it."""
    return shlex.join(list(argv))


@dataclass(frozen=True, kw_only=True)
class Ran:
    """A command that ran: how it ended."""

    argv: list[str]
    returncode: int
    duration: float
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


@dataclass(frozen=True, kw_only=True)
class Result(Ran):
    """A command run for an operator: stdout and stderr merged, as text."""

    output: str

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


class Children(Protocol):
    """Told of each command's process group as it starts and once it was reaped: the
    lock file names them, so that a run taking over from a killed one can end them."""

    def started(self, pid: int) -> None: ...

    def ended(self, pid: int) -> None: ...


@dataclass
class Runner:
    """Runs argv lists; ``stream`` echoes output live (to the real terminal).

    ``stream_to`` replaces the real terminal (``sys.__stderr__``) as the place
    streamed output is copied to. What is echoed has ``secrets`` masked (the run's
    known ones by default); the command and ``Result.output`` keep the real values,
    since callers parse them; whoever shows or stores them masks them.
    ``children`` is told of every process group.
    """

    echo: bool = False
    history: list[Result] = field(default_factory=list)
    stream_to: TextIO | None = None
    secrets: masking.Secrets = field(default_factory=lambda: masking.KNOWN)
    children: Children | None = None

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
        stdin_from: Path | None = None,
        stdout_to: Path | None = None,
    ) -> Result:
        """Run ``argv`` with stdout and stderr merged into ``Result.output``.

        ``stdin_from`` feeds a file to the command; ``stdout_to`` sends its stdout
        into a file (created or truncated), and ``Result.output`` is then its stderr
        alone. Both are for data too large to hold (a database dump): the bytes go
        between the file and the command without passing through this process.

        On timeout the whole process group is killed and the result says
        ``timed_out`` (returncode 124). Once the command itself has exited, a
        background child still holding its output open is not waited for.
        """
        if stdin is not None and stdin_from is not None:
            raise ValueError("give stdin or stdin_from, not both")
        argv = [str(a) for a in argv]
        full_env = None if env is None else {**os.environ, **env}
        start = time.monotonic()
        deadline = None if timeout is None else start + timeout
        with contextlib.ExitStack() as files:
            source = files.enter_context(stdin_from.open("rb")) if stdin_from else None
            sink = files.enter_context(stdout_to.open("wb")) if stdout_to else None
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=full_env,
                stdin=source or (subprocess.PIPE if stdin is not None else subprocess.DEVNULL),
                stdout=sink or subprocess.PIPE,
                stderr=subprocess.PIPE if sink else subprocess.STDOUT,
                start_new_session=True,
            )
        # The child holds its own copies of the files; ours are closed above.
        self._started(proc)
        if stdin is not None:
            _feed(proc, stdin)
        pipe = proc.stderr if sink else proc.stdout
        assert pipe is not None
        output = _Output(
            echo=(self.stream_to or TERMINAL) if stream else None, secrets=self.secrets
        )
        try:
            finished = _collect(proc, pipe, output, deadline)
        finally:
            if proc.returncode is None:  # timed out, or interrupted (Ctrl-C)
                _kill_group(proc)
                _drain(pipe, output)
                proc.wait()
            pipe.close()
            self._ended(proc)
        result = Result(
            argv=argv,
            returncode=proc.returncode if finished else 124,
            output=output.text(),
            duration=time.monotonic() - start,
            timed_out=not finished,
        )
        self.history.append(result)
        if check and not result.ok:
            raise CommandFailed(result)
        return result

    def pipe(self, argv: Argv, reader: Callable[[IO[bytes]], T]) -> tuple[Result, T]:
        """Run ``argv`` with its stdout handed to ``reader`` as a stream while it is
        written; what ``reader`` returns, and the result (its output: stderr alone).

        For data too large to hold that this process itself must read (an archive
        checksummed as tar makes it). Whatever ``reader`` leaves unread is drained, so
        the command never fails on a closed pipe. No timeout: the command ends when
        its input does (a directory on this host). If ``reader`` raises, the command's
        process group is killed.
        """
        argv = [str(a) for a in argv]
        start = time.monotonic()
        with tempfile.TemporaryFile() as errors:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                # A file, not a pipe: stderr never blocks the command while we read stdout.
                stderr=errors,
                start_new_session=True,
            )
            self._started(proc)
            stdout = proc.stdout
            assert stdout is not None
            try:
                with contextlib.suppress(OSError):  # a smaller pipe is only slower
                    fcntl.fcntl(stdout.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)
                value = reader(stdout)
                while stdout.read(PIPE_SIZE):
                    pass
                proc.wait()
            finally:
                if proc.returncode is None:  # reader failed, or Ctrl-C
                    _kill_group(proc)
                    proc.wait()
                stdout.close()
                self._ended(proc)
            errors.seek(0)
            output = errors.read().decode(errors="replace")
        result = Result(
            argv=argv, returncode=proc.returncode, output=output, duration=time.monotonic() - start
        )
        self.history.append(result)
        return result, value

    def say(self, line: str) -> None:
        """One line where streamed output goes, masked: what the next command waits for,
        before a wait during which that command may print nothing for a while."""
        out = self.stream_to or TERMINAL
        with _ECHO:
            out.write(self.secrets.mask(line) + "\n")
            out.flush()

    def read(
        self,
        argv: Argv,
        *,
        timeout: float,
        cwd: Path | str | None = None,
        stdin: bytes | None = None,
    ) -> Read:
        """Run a short query for its exact stdout (bytes), stderr kept apart.

        For reads whose output is data (a file's bytes at a commit), not text for
        an operator: nothing is merged, decoded or streamed. ``stdin``, when given,
        is the query's input (a batch of questions). On timeout the whole process
        group is killed and the read says ``timed_out``.
        """
        argv = [str(a) for a in argv]
        start = time.monotonic()
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self._started(proc)
        try:
            out, err = proc.communicate(stdin, timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            out, err = proc.communicate()
            timed_out = True
        finally:
            if proc.returncode is None:  # interrupted (Ctrl-C): leave nothing running
                _kill_group(proc)
                proc.wait()
            self._ended(proc)
        return Read(
            argv=argv,
            returncode=124 if timed_out else proc.returncode,
            stdout=out,
            stderr=err.decode(errors="replace"),
            duration=time.monotonic() - start,
            timed_out=timed_out,
        )

    def _started(self, proc: subprocess.Popen[bytes]) -> None:
        if self.children is not None:
            self.children.started(proc.pid)

    def _ended(self, proc: subprocess.Popen[bytes]) -> None:
        # Only once reaped: until then the pid, the group's id, is still this command's.
        if self.children is not None and proc.returncode is not None:
            self.children.ended(proc.pid)


@dataclass(frozen=True, kw_only=True)
class Read(Ran):
    """What a query printed: its exact stdout, and stderr for the error message."""

    stdout: bytes
    stderr: str

    @property
    def text(self) -> str:
        return self.stdout.decode(errors="replace")

    def lines(self) -> list[str]:
        return [line for line in self.text.splitlines() if line]


# How long to keep reading after the command exited or was killed: output still in
# flight arrives within it, while a child that kept the pipe open is not waited for.
_GRACE = 0.5
_POLL = 0.1


#: Set when the run is stopped (a signal): the main thread's command is interrupted by
#: the signal itself; commands under way in other threads (`--parallel`) see this and
#: are killed the same way, so nothing goes on changing services after the run ends.
INTERRUPTED = threading.Event()

class _Terminal:
    """Where streamed output goes by default: the run's progress lines (`progress.say`),
    which the plugin writes past pytest's output capture, else the process's real
    stderr. Writing to ``sys.__stderr__`` alone is not enough: pytest captures that
    file descriptor too, so a passing step's script output would show only in the
    report. Takes whole lines (see `_Output`)."""

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if progress.telling():
                progress.say(None, line)
            elif sys.__stderr__ is not None:
                sys.__stderr__.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        if not progress.telling() and sys.__stderr__ is not None:
            sys.__stderr__.flush()


TERMINAL: TextIO = _Terminal()  # type: ignore[assignment]  # the two methods used

#: Held while echoing, so lines from commands run side by side do not interleave.
_ECHO = threading.Lock()


def _whole_lines(text: str, *, final: bool) -> tuple[str, str]:
    """(what can be shown now, what waits for the rest of its line)."""
    if final:
        return (text + "\n" if text and not text.endswith("\n") else text), ""
    cut = text.rfind("\n") + 1
    return text[:cut], text[cut:]


class _Output:
    """Collects raw output bytes as text, copying each chunk to ``echo`` as it comes,
    with secrets masked (a chunk that may end inside one waits for the next)."""

    def __init__(self, echo: TextIO | None, secrets: masking.Secrets) -> None:
        self.echo = echo
        self.masked = secrets.stream()
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.chunks: list[str] = []
        # Echoed whole lines at a time to the terminal's writer, which takes lines, and
        # from a worker thread: commands run side by side (`--parallel`) do not cut
        # each other's lines. Elsewhere a partial line ("working...") shows at once.
        self.by_line = echo is TERMINAL or threading.current_thread() is not threading.main_thread()
        self.partial = ""

    def feed(self, data: bytes, *, final: bool = False) -> None:
        chunk = self.decoder.decode(data, final=final)
        if chunk:
            self.chunks.append(chunk)
        shown = self.masked.feed(chunk) + (self.masked.flush() if final else "")
        if self.by_line:
            shown, self.partial = _whole_lines(self.partial + shown, final=final)
        if self.echo is not None and shown:
            with _ECHO:
                self.echo.write(shown)
                self.echo.flush()

    def text(self) -> str:
        self.feed(b"", final=True)
        # As text mode would: \r\n and lone \r (progress bars) become line ends.
        return "".join(self.chunks).replace("\r\n", "\n").replace("\r", "\n")


def _read(fd: int, timeout: float) -> bytes | None:
    """What the pipe has within ``timeout``: None if nothing came, b"" at end of file."""
    poller = select.poll()  # not select.select: it fails on descriptors above 1023
    poller.register(fd, select.POLLIN)
    return os.read(fd, 65536) if poller.poll(max(timeout, 0) * 1000) else None


def _collect(
    proc: subprocess.Popen[bytes], pipe: IO[bytes], output: _Output, deadline: float | None
) -> bool:
    """Read ``pipe`` until the command is done; False when the deadline passed first.

    Takes whatever bytes are there (never waits for a whole line), so a partial
    line is shown at once and cannot hold the loop past the deadline. Once the
    command has exited, reading stops when the pipe closes or stays quiet for
    ``_GRACE`` (a background child may hold it open for ever).
    """
    fd = pipe.fileno()
    quiet_since = time.monotonic()
    while True:
        if INTERRUPTED.is_set() and threading.current_thread() is not threading.main_thread():
            raise KeyboardInterrupt("the run was stopped")  # the caller kills the group
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return proc.poll() is not None
        if proc.poll() is not None and now - quiet_since >= _GRACE:
            return True
        data = _read(fd, _POLL if deadline is None else min(_POLL, deadline - now))
        if data == b"":
            break
        if data is not None:
            output.feed(data)
            quiet_since = time.monotonic()
    # The output is closed; the command may still be running.
    try:
        proc.wait(timeout=None if deadline is None else max(deadline - time.monotonic(), 0))
    except subprocess.TimeoutExpired:
        return False
    return True


def _drain(pipe: IO[bytes], output: _Output) -> None:
    """After a kill: take the output still in the pipe, for at most ``_GRACE``."""
    fd = pipe.fileno()
    until = time.monotonic() + _GRACE
    while (left := until - time.monotonic()) > 0:
        data = _read(fd, left)
        if not data:
            return
        output.feed(data)


def _feed(proc: subprocess.Popen[bytes], text: str) -> None:
    """Write stdin from a thread, so a command that prints before reading cannot deadlock."""
    assert proc.stdin is not None
    pipe = proc.stdin

    def write() -> None:
        # OSError: the command exited (or was killed) without reading it all.
        with contextlib.suppress(OSError):
            pipe.write(text.encode())
        with contextlib.suppress(OSError):
            pipe.close()

    threading.Thread(target=write, name=f"stdin-{proc.pid}", daemon=True).start()


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


DEFAULT = Runner()
