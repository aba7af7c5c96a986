"""The release lock, with real processes."""

from __future__ import annotations

import json
import subprocess

import pytest

from release_phases import lock
from release_phases.errors import ReleaseError


def test_a_second_holder_is_refused_with_who_holds_it(tmp_path):
    path = tmp_path / ".lock"
    child = subprocess.Popen(["sleep", "30"])
    try:
        held = lock.me("111")
        held = lock.Holder("111", child.pid, held.host, held.started, lock._proc_start(child.pid))
        path.write_text(json.dumps(held.__dict__))
        with pytest.raises(ReleaseError) as err:
            lock.acquire(path, "222")
        message = str(err.value)
        assert "ticket 111" in message and f"pid {child.pid}" in message and held.host in message
    finally:
        child.kill()
        child.wait()
    got = lock.acquire(path, "222")
    assert got.took_over is not None and got.took_over.ticket == "111"
    assert lock.read(path).ticket == "222"
    lock.release(path, got.holder)
    assert not path.exists()


def test_a_recycled_pid_does_not_keep_a_lock_alive(tmp_path):
    path = tmp_path / ".lock"
    me = lock.me("1")
    # Our own pid but another process start time: the recorded holder is gone.
    path.write_text(json.dumps({**me.__dict__, "pid": 1, "proc_start": "0"}))
    got = lock.acquire(path, "2")
    assert got.took_over is not None


def test_a_lock_cut_short_by_a_crash_is_stale(tmp_path):
    path = tmp_path / ".lock"
    path.write_text("")
    got = lock.acquire(path, "3")
    assert got.took_over is not None
    assert lock.read(path).ticket == "3"


def test_release_leaves_someone_elses_lock_alone(tmp_path):
    path = tmp_path / ".lock"
    got = lock.acquire(path, "1")
    other = lock.Holder("9", got.holder.pid + 1, got.holder.host, got.holder.started)
    path.write_text(json.dumps(other.__dict__))
    lock.release(path, got.holder)
    assert path.exists()
