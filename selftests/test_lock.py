"""The release lock, with real processes contending for it."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from release_phases import lock
from release_phases.errors import ReleaseError
from selftests.support import engine
from selftests.support.scenario import v1_running_v2_merged

HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from release_phases import lock
    try:
        held = lock.acquire(Path(sys.argv[1]), sys.argv[2])
    except Exception as exc:
        print("refused", flush=True)
        sys.exit(3)
    print("held", flush=True)
    time.sleep(float(sys.argv[3]))
    """
)


def _holder(path: Path, ticket: str, seconds: float = 60) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path), ticket, str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_is_refused_with_who_holds_it(tmp_path):
    path = tmp_path / ".lock"
    proc = _holder(path, "111")
    try:
        with pytest.raises(ReleaseError) as err:
            lock.acquire(path, "222")
        message = str(err.value)
        assert "ticket 111" in message and f"pid {proc.pid}" in message
        assert "changed nothing" in message
    finally:
        proc.kill()
        proc.wait()


def test_a_run_that_died_holding_the_lock_leaves_it_stale_and_taken_over(tmp_path):
    path = tmp_path / ".lock"
    proc = _holder(path, "111")
    proc.kill()  # kill -9: no chance to release
    proc.wait()
    got = lock.acquire(path, "222")
    assert got.took_over is not None and got.took_over.ticket == "111"
    assert lock.read(path).ticket == "222"
    lock.release(got)
    assert lock.read(path) is None, "released: the file says nobody holds it"


@pytest.mark.reliability("fault", "a lock file cut short by a crash is stale")
def test_a_lock_file_cut_short_by_a_crash_is_stale(tmp_path):
    path = tmp_path / ".lock"
    path.write_text('{"ticket": "9", "pi')
    got = lock.acquire(path, "3")
    assert got.took_over is not None and got.took_over.ticket == "?"
    lock.release(got)


def test_the_same_process_cannot_take_it_twice(tmp_path):
    path = tmp_path / ".lock"
    got = lock.acquire(path, "1")
    try:
        with pytest.raises(ReleaseError, match="ticket 1"):
            lock.acquire(path, "2")
    finally:
        lock.release(got)
    lock.release(lock.acquire(path, "2"))


@pytest.mark.reliability("fault", "many processes take the lock at once: exactly one wins")
def test_of_many_contenders_exactly_one_wins(tmp_path):
    path = tmp_path / ".lock"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", HOLD, str(path), f"t{i}", "2"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(8)
    ]
    outcomes = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert sorted(outcomes) == ["held"] + ["refused"] * 7, outcomes


@pytest.mark.docker
def test_a_release_refused_by_a_held_lock_says_so_without_a_traceback(deploy, make_service):
    """One error, the operator's message; every other step skipped, none erroring in its
    teardown (pytest's own plugins are set up around the refusal)."""
    v1_running_v2_merged(deploy, make_service, ("api",))
    path = deploy.prod / ".asd/workspace/releases/.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    proc = _holder(path, "999")
    try:
        run = engine.run(deploy.prod, "1234")
    finally:
        proc.kill()
        proc.wait()
    assert run.rc != 0, run
    assert "another release holds the lock" in run.output, run
    assert "Traceback" not in run.output and "KeyError" not in run.output, run
    assert len(re.findall(r"^ERROR ", run.output, re.MULTILINE)) == 1, run
    assert "NOT STARTED (release halted: the lock is held by another release)" in run.output
