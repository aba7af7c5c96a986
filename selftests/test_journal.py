"""The journal: what it refuses before it writes anything, and where it writes."""

from __future__ import annotations

import subprocess

import pytest

from release_phases import lock
from release_phases import state as statefile
from release_phases.errors import ConfigError
from release_phases.journal import IGNORE_ALL, Journal, Paths, keep_out_of_git


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


def _untracked(repo) -> str:
    """What `git status` lists, the engine's pathspec excludes not applied."""
    done = subprocess.run(
        ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=all"],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def test_the_engines_directories_never_show_in_git_status(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    paths = Paths(tmp_path, "7")
    journal = Journal(paths, None, branch="main")
    journal.open(fresh_release=True, phase="prepare")
    try:
        statefile.write(paths.state, statefile.State(ticket="7", phase="prepare"))
        (paths.make_reports() / "7-release.html").write_text("<html>")
        (paths.backups / "web").mkdir(parents=True)
        (paths.backups / "web" / "web-data.tar").write_bytes(b"production data")
    finally:
        journal.close()
    assert (tmp_path / ".asd/.gitignore").read_text() == IGNORE_ALL
    assert (tmp_path / "reports").stat().st_mode & 0o777 == 0o700
    assert _untracked(tmp_path) == ""
    # Without them, the same files would be listed (the test can fail).
    (tmp_path / ".asd/.gitignore").unlink()
    assert "?? .asd/" in _untracked(tmp_path)


def test_a_gitignore_already_there_is_left_as_it_is(tmp_path):
    own = tmp_path / "reports" / ".gitignore"
    own.parent.mkdir()
    own.write_text("*.html\n")
    keep_out_of_git(own.parent)
    assert own.read_text() == "*.html\n"
    keep_out_of_git(tmp_path / ".asd")  # an existing directory of an older engine: given one
    assert (tmp_path / ".asd/.gitignore").read_text() == IGNORE_ALL
