"""Git commands as data, and the reads the plan depends on, against a real repository."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import git
import pytest

from release_phases.host import git as gitops
from release_phases.host.shell import CommandFailed, Runner


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


def _origin_with_news(tmp_path: Path) -> Path:
    """A clone whose origin has a commit the clone has not fetched yet."""
    origin = tmp_path / "origin.git"
    git.Repo.init(origin, bare=True, initial_branch="main")
    dev = git.Repo.clone_from(str(origin), str(tmp_path / "dev"))
    for n in (1, 2):
        (tmp_path / "dev" / "f").write_text(f"{n}\n")
        dev.index.add(["f"])
        dev.index.commit(f"commit {n}", author=ME, committer=ME)
        if n == 1:
            dev.git.push("origin", "HEAD:main")
            git.Repo.clone_from(str(origin), str(tmp_path / "prod"))
    dev.git.push("origin", "HEAD:main")
    return tmp_path / "prod"


ME = git.Actor("selftest", "selftest@example.invalid")


def test_a_fetch_waits_for_a_ref_another_git_process_has_locked(tmp_path, monkeypatch):
    prod = _origin_with_news(tmp_path)
    lock = prod / ".git/refs/remotes/origin/main.lock"

    def hold_then_release() -> None:
        time.sleep(0.6)
        lock.unlink()

    lock.write_text("")  # what a concurrent `git fetch` holds while it updates the ref
    releaser = threading.Thread(target=hold_then_release)
    releaser.start()
    try:
        fetched = gitops.Git(prod, Runner()).fetch()
    finally:
        releaser.join()
    assert fetched.ok
    assert gitops.Git(prod, Runner()).resolve("origin/main") is not None

    # Without the tries, the same lock fails the fetch: the test above is not vacuous.
    lock.write_text("")
    (tmp_path / "dev" / "f").write_text("3\n")
    dev = git.Repo(tmp_path / "dev")
    dev.index.add(["f"])
    dev.index.commit("commit 3", author=ME, committer=ME)
    dev.git.push("origin", "HEAD:main")
    monkeypatch.setattr(gitops, "FETCH_RETRIES", (0.0,))
    with pytest.raises(CommandFailed, match="cannot lock ref"):
        gitops.Git(prod, Runner()).fetch()


def test_many_files_are_read_in_one_batch_as_show_reads_them_one_by_one(tmp_path):
    repo = git.Repo.init(tmp_path, initial_branch="main")
    files = {
        "packages/a/manifest.yaml": "image: {name: a, tag: '1'}\n",
        "packages/b/manifest.yaml": "",
        "packages/b/deploy/compose.yaml": "services: {}\n",
        "packages/c/data.bin": "line one\nline two without end",
    }
    for path, text in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    repo.index.add(list(files))
    repo.index.commit("packages")
    ops = gitops.Git(tmp_path, Runner())
    asked = [*files, "packages/missing/manifest.yaml"]
    batch = ops.show_many("HEAD", [*asked, "packages/b/deploy"])
    shown = {path: ops.show("HEAD", path) for path in asked}
    assert {path: (batch[path] or b"").decode() or None for path in asked} == {
        path: text or None for path, text in shown.items()
    }
    assert batch["packages/missing/manifest.yaml"] is None
    # A directory is no file (`git show` would list it).
    assert batch["packages/b/deploy"] is None and batch["packages/b/manifest.yaml"] == b""
    assert ops.files_in("HEAD", ["packages/b/", "packages/c/"]) == {
        "packages/b/manifest.yaml",
        "packages/b/deploy/compose.yaml",
        "packages/c/data.bin",
    }
    assert ops.files_in("HEAD", []) == set()
