"""Git commands as data, and the reads the plan depends on, against a real repository."""

from __future__ import annotations

from pathlib import Path

import git
import pytest

from release_phases.host import git as gitops
from release_phases.host.shell import Runner


def test_changed_services_are_package_dirs_sorted_once():
    files = [
        "packages/web/compose.yaml",
        "packages/api/manifest.yaml",
        "packages/web/e2e/test_x.py",
        "packages/README.md",
        "releases/1-x.sh",
    ]
    assert gitops.changed_services(files) == ["api", "web"]


def test_commands_are_argv_lists():
    repo = Path("/srv/deploy")
    assert gitops.pull_argv(repo, "main") == [
        "git",
        "-C",
        "/srv/deploy",
        "pull",
        "--ff-only",
        "origin",
        "main",
    ]
    assert gitops.revert_argv(repo, "abc", merge=True)[-3:] == ["-m", "1", "abc"]
    assert "-m" not in gitops.revert_argv(repo, "abc", merge=False)
    assert gitops.status_argv(repo)[-3:] == [
        ":(exclude).asd",
        ":(exclude)reports",
        ":(exclude).pytest_cache",
    ]


def test_show_bytes_is_exact_and_dirty_ignores_the_engines_own_files(tmp_path):
    repo = git.Repo.init(tmp_path, initial_branch="main")
    data = bytes(range(256)) + b"\n\n"
    (tmp_path / "blob.bin").write_bytes(data)
    repo.index.add(["blob.bin"])
    repo.index.commit("binary")
    ops = gitops.Git(tmp_path, Runner())
    assert ops.show_bytes("HEAD", "blob.bin") == data
    (tmp_path / ".asd").mkdir()
    (tmp_path / ".asd" / "state.env").write_text("x")
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "r.html").write_text("x")
    assert ops.dirty() == []
    (tmp_path / "stray.txt").write_text("x")
    assert ops.dirty() == ["?? stray.txt"]


def test_a_failing_read_names_the_command_and_gits_words(tmp_path):
    git.Repo.init(tmp_path, initial_branch="main")
    ops = gitops.Git(tmp_path, Runner())
    assert ops.resolve("main") is None, "a missing ref is an answer, not an error"
    with pytest.raises(gitops.GitError, match=r"rev-parse HEAD` exited"):
        ops.head()  # an empty repository has no HEAD commit: an error, never a guess
