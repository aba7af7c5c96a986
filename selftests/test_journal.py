"""The journal: what it refuses before it writes anything."""

from __future__ import annotations

import pytest

from release_phases import lock
from release_phases import state as statefile
from release_phases.errors import ConfigError
from release_phases.journal import Journal, Paths


@pytest.mark.reliability("fault", "the state file changed by hand between planning and the lock")
def test_a_state_file_changed_since_planning_is_refused_and_the_lock_let_go(tmp_path):
    paths = Paths(tmp_path, "7")
    journal = Journal(paths, paths.found_state(), branch="main")  # planned: no state file
    statefile.write(paths.state, statefile.State(ticket="7", phase="prepare"))  # another run
    written = paths.state.read_bytes()
    with pytest.raises(ConfigError) as refused:
        journal.open(fresh_release=True, phase="prepare")
    message = str(refused.value)
    assert "changed while this run was being planned" in message and "Next:" in message
    assert not journal.is_open
    assert paths.state.read_bytes() == written, "nothing was written over it"
    assert not paths.log.exists()
    lock.release(lock.acquire(paths.lock, "8"))  # the lock was let go: it can be taken


def test_the_state_file_as_planned_opens(tmp_path):
    paths = Paths(tmp_path, "7")
    statefile.write(paths.state, statefile.State(ticket="7", phase="prepare"))
    journal = Journal(paths, paths.found_state(), branch="main")
    journal.open(fresh_release=False, phase="migrate")
    try:
        assert journal.is_open and journal.state.phase == "prepare"
    finally:
        journal.close()
