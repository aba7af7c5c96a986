"""The Runner, for real: streaming, timeouts and children that outlive their parent."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from release_phases.host.shell import CommandFailed, Runner, render
from release_phases.masking import MASK, Secrets


class Clocked:
    """A stream sink that remembers when each chunk arrived."""

    def __init__(self) -> None:
        self.chunks: list[tuple[float, str]] = []

    def write(self, text: str) -> int:
        self.chunks.append((time.monotonic(), text))
        return len(text)

    def flush(self) -> None:
        pass

    def first(self, text: str) -> float:
        return next(t for t, chunk in self.chunks if text in chunk)


@pytest.fixture
def pid_file(tmp_path: Path):
    """Where a test's escaping child writes its pid; that child is killed afterwards."""
    path = tmp_path / "child.pid"
    yield path
    if path.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(path.read_text()), signal.SIGKILL)


def escaping_child(pid_file: Path, seconds: int) -> str:
    """Shell text: a child in its own session (beyond the group kill) holding stdout."""
    code = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); "
    code += f"time.sleep({seconds})"
    return f"setsid {sys.executable} -c {render([code])} &"


def test_output_streams_while_the_command_runs() -> None:
    sink = Clocked()
    start = time.monotonic()
    result = Runner(stream_to=sink).run(
        ["bash", "-c", "echo first; sleep 1; echo second >&2"], stream=True
    )
    assert sink.first("first") - start < 0.8  # shown before the command ended
    assert sink.first("second") - start >= 1
    assert result.output == "first\nsecond\n"
    assert "".join(chunk for _, chunk in sink.chunks) == result.output


def test_a_partial_line_is_streamed_and_cannot_outlast_the_timeout() -> None:
    sink = Clocked()
    start = time.monotonic()
    result = Runner(stream_to=sink).run(
        ["bash", "-c", "printf 'working...'; sleep 30"], stream=True, timeout=1, check=False
    )
    assert 1 <= time.monotonic() - start < 2
    assert sink.first("working...") - start < 0.8
    assert result.timed_out and result.returncode == 124 and not result.ok
    assert result.output == "working..."


@pytest.mark.parametrize("stream", [True, False])
def test_a_timeout_returns_even_when_a_child_escaped_with_the_pipe(
    pid_file: Path, stream: bool
) -> None:
    script = f"{escaping_child(pid_file, 30)} echo started; sleep 30"
    start = time.monotonic()
    result = Runner(stream_to=Clocked()).run(
        ["bash", "-c", script], stream=stream, timeout=1, check=False
    )
    assert time.monotonic() - start < 3
    assert result.timed_out
    assert "started" in result.output


def test_a_command_that_exits_is_not_held_by_a_background_child(pid_file: Path) -> None:
    script = f"{escaping_child(pid_file, 30)} echo done; exit 0"
    start = time.monotonic()
    result = Runner().run(["bash", "-c", script], timeout=10)
    assert time.monotonic() - start < 3
    assert result.ok and result.output == "done\n"


def test_a_command_that_closes_its_output_is_still_timed_out() -> None:
    start = time.monotonic()
    result = Runner().run(["bash", "-c", "exec >&- 2>&-; sleep 30"], timeout=1, check=False)
    assert time.monotonic() - start < 3
    assert result.timed_out


def test_a_failure_raises_with_the_exit_code_and_output() -> None:
    runner = Runner()
    with pytest.raises(CommandFailed) as failed:
        runner.run(["bash", "-c", "echo out; echo err >&2; exit 5"])
    assert failed.value.rc == 5
    assert failed.value.result.output == "out\nerr\n"
    assert "exited 5" in str(failed.value)
    assert runner.history == [failed.value.result]


def test_stdin_is_fed_and_output_kept_without_streaming() -> None:
    sink = Clocked()
    big = "x" * 300_000 + "\n"  # more than a pipe holds: no deadlock either way
    result = Runner(stream_to=sink).run(["cat"], stdin=big)
    assert result.output == big
    assert sink.chunks == []


def test_output_is_decoded_as_text_mode_would() -> None:
    result = Runner().run(["printf", "caf\\303\\251\\r\\nbad \\377\\n"])
    assert result.output == "café\nbad \ufffd\n"


def test_read_keeps_stdout_exact_and_stderr_apart():
    found = Runner().read(
        [sys.executable, "-c", "import sys; sys.stdout.buffer.write(b'\\x00\\xff\\n'); "
         "sys.stderr.write('warn')"],
        timeout=30,
    )
    assert found.ok and found.stdout == b"\x00\xff\n" and found.stderr == "warn"


def test_read_kills_a_hung_query_at_its_timeout():
    found = Runner().read(["bash", "-c", "sleep 30 & wait"], timeout=0.5)
    assert found.timed_out and not found.ok and found.returncode == 124
    assert found.duration < 10


def test_stdout_to_a_file_keeps_the_bytes_exact_and_stderr_as_the_output(
    tmp_path: Path,
) -> None:
    out = tmp_path / "dump"
    # More than a pipe holds, with every byte value: nothing is decoded or merged.
    script = (
        "import sys; sys.stderr.write('dumping\\n'); sys.stderr.flush(); "
        "sys.stdout.buffer.write(bytes(range(256)) * 4096); sys.stderr.write('done\\n')"
    )
    result = Runner().run([sys.executable, "-c", script], stdout_to=out, timeout=30)
    assert result.ok
    assert out.read_bytes() == bytes(range(256)) * 4096
    assert result.output == "dumping\ndone\n"


def test_stdin_from_a_file_reaches_the_command_whole(tmp_path: Path) -> None:
    data = tmp_path / "dump"
    data.write_bytes(b"\x00\xff" * 200_000)
    result = Runner().run(["wc", "-c"], stdin_from=data, timeout=30)
    assert result.output.strip() == "400000"


def test_a_timeout_with_stdout_to_a_file_kills_the_group_and_keeps_stderr(
    tmp_path: Path,
) -> None:
    out = tmp_path / "dump"
    start = time.monotonic()
    result = Runner().run(
        ["bash", "-c", "printf partial; echo stuck >&2; sleep 30"],
        stdout_to=out,
        timeout=1,
        check=False,
    )
    assert time.monotonic() - start < 3
    assert result.timed_out and result.returncode == 124
    assert result.output == "stuck\n"
    assert out.read_bytes() == b"partial"


def test_pipe_hands_stdout_to_the_reader_drains_the_rest_and_keeps_stderr() -> None:
    # More than a pipe holds; the reader takes only the first bytes, and the command must
    # still end well (the rest is drained, never a closed pipe).
    script = (
        "import sys; sys.stderr.write('archiving\\n'); sys.stderr.flush(); "
        "sys.stdout.buffer.write(bytes(range(256)) * 8192); sys.stderr.write('done\\n')"
    )
    result, head = Runner().pipe([sys.executable, "-c", script], lambda out: out.read(512))
    assert head == bytes(range(256)) * 2
    assert result.ok and result.output == "archiving\ndone\n"


def test_pipe_kills_the_command_when_the_reader_fails() -> None:
    def reader(out):
        out.read(10)
        raise RuntimeError("the reader gave up")

    start = time.monotonic()
    with pytest.raises(RuntimeError, match="gave up"):
        Runner().pipe(["yes"], reader)  # never ends by itself
    assert time.monotonic() - start < 5


def test_stdin_text_and_stdin_from_a_file_are_exclusive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not both"):
        Runner().run(["cat"], stdin="x", stdin_from=tmp_path / "f")


def test_a_line_said_goes_where_output_streams_masked() -> None:
    sink = io.StringIO()
    runner = Runner(stream_to=sink, secrets=Secrets(["hunter2"]))
    runner.say("web: stopping, password hunter2")
    assert sink.getvalue() == f"web: stopping, password {MASK}\n"
