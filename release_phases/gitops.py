"""Git, for the deploy repo: reads through GitPython, changes as argv run by the Runner.

Changing commands (fetch, pull, checkout, revert, push) are built as argv lists by
the small functions at the top, so they can be shown in the plan and the report
and tested without a repository; `Repo` below runs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import git

from release_phases.shell import Result, Runner

#: The engine's own files never make the worktree dirty.
OWN_PATHS = (".asd", "reports", ".pytest_cache")


def fetch_argv(repo: Path) -> list[str]:
    return ["git", "-C", str(repo), "fetch", "--prune", "origin"]


def pull_argv(repo: Path, branch: str) -> list[str]:
    return ["git", "-C", str(repo), "pull", "--ff-only", "origin", branch]


def switch_argv(repo: Path, branch: str) -> list[str]:
    """Create or reset the local `branch` at HEAD and check it out (worktree unchanged)."""
    return ["git", "-C", str(repo), "checkout", "-B", branch, "HEAD"]


def status_argv(repo: Path) -> list[str]:
    excludes = [f":(exclude){p}" for p in OWN_PATHS]
    return [
        "git",
        "-C",
        str(repo),
        "status",
        "--porcelain",
        "--untracked-files=all",
        "--",
        ".",
        *excludes,
    ]


def revert_argv(repo: Path, sha: str, *, merge: bool) -> list[str]:
    """Apply the inverse of `sha` to the index and worktree without committing."""
    mainline = ["-m", "1"] if merge else []
    return ["git", "-C", str(repo), "revert", "--no-edit", "--no-commit", *mainline, sha]


def commit_argv(repo: Path, message: str) -> list[str]:
    return ["git", "-C", str(repo), "commit", "--quiet", "-m", message]


def abort_revert_argv(repo: Path) -> list[str]:
    """Drop a half-applied revert: back to HEAD, index and worktree."""
    return ["git", "-C", str(repo), "reset", "--hard", "--quiet", "HEAD"]


def push_argv(repo: Path, branch: str) -> list[str]:
    return ["git", "-C", str(repo), "push", "origin", f"HEAD:{branch}"]


def checkout_argv(repo: Path, branch: str) -> list[str]:
    return ["git", "-C", str(repo), "checkout", "--quiet", branch]


@dataclass
class Repo:
    path: Path
    runner: Runner

    @property
    def _git(self) -> git.Git:
        return git.Repo(self.path).git

    # -- reads --------------------------------------------------------------------------
    def head(self) -> str:
        return self._git.rev_parse("HEAD")

    def branch(self) -> str | None:
        """The checked-out branch, or None on a detached HEAD."""
        try:
            return self._git.symbolic_ref("--quiet", "--short", "HEAD")
        except git.GitCommandError:
            return None

    def resolve(self, ref: str) -> str | None:
        try:
            return self._git.rev_parse("--verify", "--quiet", f"{ref}^{{commit}}")
        except git.GitCommandError:
            return None

    def is_ancestor(self, older: str, newer: str) -> bool:
        try:
            self._git.merge_base("--is-ancestor", older, newer)
            return True
        except git.GitCommandError:
            return False

    def dirty(self) -> list[str]:
        out = self.runner.run(status_argv(self.path)).output
        return [line for line in out.splitlines() if line.strip()]

    def changed_files(self, base: str, merge: str) -> list[str]:
        out = self._git.diff("--name-only", "--no-renames", f"{base}...{merge}")
        return [line for line in out.splitlines() if line]

    def show(self, ref: str, path: str) -> str | None:
        try:
            return self._git.show(f"{ref}:{path}")
        except git.GitCommandError:
            return None

    def show_bytes(self, ref: str, path: str) -> bytes:
        """A file's exact content at `ref` (binary files included)."""
        return self._git.show(
            f"{ref}:{path}", stdout_as_string=False, strip_newline_in_stdout=False
        )

    def exists(self, ref: str, path: str) -> bool:
        try:
            self._git.cat_file("-e", f"{ref}:{path}")
            return True
        except git.GitCommandError:
            return False

    def list_dir(self, ref: str, path: str) -> list[str]:
        try:
            out = self._git.ls_tree("--name-only", ref, f"{path.rstrip('/')}/")
        except git.GitCommandError:
            return []
        return [PurePosixPath(line).name for line in out.splitlines() if line]

    def files_under(self, ref: str, path: str) -> list[str]:
        """Every file below `path` at `ref`, recursively, as repo-relative paths."""
        try:
            out = self._git.ls_tree("-r", "--name-only", ref, f"{path.rstrip('/')}/")
        except git.GitCommandError:
            return []
        return [line for line in out.splitlines() if line]

    def subjects(self, base: str, merge: str) -> list[str]:
        """`<short sha> <subject>` for each commit in base..merge, newest first."""
        out = self._git.log("--format=%h %s", f"{base}..{merge}")
        return [line for line in out.splitlines() if line]

    def first_parent_chain(self, base: str, merge: str) -> list[str]:
        """The commits base..merge along first parents, newest first: what a release merged."""
        out = self._git.rev_list("--first-parent", f"{base}..{merge}")
        return [line for line in out.splitlines() if line]

    def find_commit(self, since: str, line: str) -> str | None:
        """The newest commit in since..HEAD whose message has exactly this line."""
        out = self._git.log("--format=%H", "--fixed-strings", f"--grep={line}", f"{since}..HEAD")
        found = [sha for sha in out.splitlines() if sha]
        return found[0] if found else None

    def staged_only(self) -> bool:
        """Changes are all staged (what `git revert --no-commit` leaves), nothing else."""
        lines = self.dirty()
        return bool(lines) and all(line[0] not in " ?" and line[1] == " " for line in lines)

    def is_merge(self, sha: str) -> bool:
        return len(self._git.rev_list("--parents", "-n", "1", sha).split()) > 2

    def tree(self, ref: str, path: str = "") -> str:
        """The tree id of `path` at `ref` (empty when it does not exist there)."""
        try:
            return self._git.rev_parse(f"{ref}:{path}")
        except git.GitCommandError:
            return ""

    # -- changes ------------------------------------------------------------------------
    def fetch(self) -> Result:
        return self.runner.run(fetch_argv(self.path), timeout=120)

    def pull(self, branch: str) -> Result:
        return self.runner.run(pull_argv(self.path, branch), timeout=300, check=False)

    def switch(self, branch: str) -> Result:
        return self.runner.run(switch_argv(self.path, branch))


def changed_services(files: list[str]) -> list[str]:
    """The `packages/<service>/` dirs touched by a list of changed paths, sorted."""
    found = set()
    for name in files:
        parts = PurePosixPath(name).parts
        if len(parts) >= 3 and parts[0] == "packages":
            found.add(parts[1])
    return sorted(found)
