"""Git, for the deploy repo: every command, reads included, an argv run by the Runner.

Changing commands (fetch, pull, checkout, revert, push) are built as argv lists by
the small functions at the top, so they can be shown in the plan and the report
and tested without a repository; `Git` below runs them, and its reads, each with
a timeout, so a hung filesystem or a stuck hook cannot hang a release.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from release_phases.errors import ReleaseError
from release_phases.host.shell import CommandFailed, Read, Result, Runner, render

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


#: Pauses between tries of a fetch that found a ref locked by another git process.
FETCH_RETRIES = (0.2, 0.5, 1.0, 2.0, 4.0, 0.0)
_LOCKED = re.compile(r"cannot lock ref|Unable to create '.*\.lock': File exists")
#: Seconds a read of the local repository may take before it counts as hung.
READ_TIMEOUT = 60.0
FETCH_TIMEOUT = 120.0
PULL_TIMEOUT = 300.0


class GitError(ReleaseError):
    """A read of the local repository failed where it must not (not a "no such ref")."""


@dataclass
class Git:
    """One deploy repository, every git command of it run by the one Runner.

    Reads answer questions (`head`, `show`, `changed_files`); a read that may
    legitimately find nothing returns None or an empty list, any other failure
    raises `GitError` with git's own words.
    """

    path: Path
    runner: Runner

    def _argv(self, *args: str) -> list[str]:
        # quotepath=off: a non-ASCII path is printed as is, not as a quoted escape.
        return ["git", "-C", str(self.path), "-c", "core.quotepath=off", *args]

    def _read(self, *args: str) -> Read:
        return self.runner.read(self._argv(*args), timeout=READ_TIMEOUT)

    def _out(self, *args: str) -> str:
        """The read's output, stripped; a failure is an error."""
        result = self._read(*args)
        if not result.ok:
            how = "timed out" if result.timed_out else f"exited {result.returncode}"
            raise GitError(
                f"`{render(result.argv)}` {how}: {result.stderr.strip()}",
                untouched="everything: this was a read",
                next_command=f"check the repository: git -C {self.path} status",
                rc=result.returncode,
            )
        return result.text.strip()

    def _maybe(self, *args: str) -> str | None:
        """The read's output, or None when git says no (a missing ref or path)."""
        result = self._read(*args)
        return result.text.strip() if result.ok else None

    # -- reads --------------------------------------------------------------------------
    def head(self) -> str:
        return self._out("rev-parse", "HEAD")

    def branch(self) -> str | None:
        """The checked-out branch, or None on a detached HEAD."""
        return self._maybe("symbolic-ref", "--quiet", "--short", "HEAD")

    def resolve(self, ref: str) -> str | None:
        return self._maybe("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")

    def is_ancestor(self, older: str, newer: str) -> bool:
        return self._read("merge-base", "--is-ancestor", older, newer).ok

    def dirty(self) -> list[str]:
        return self.runner.read(status_argv(self.path), timeout=READ_TIMEOUT).lines()

    def changed_files(self, base: str, merge: str) -> list[str]:
        out = self._out("diff", "--name-only", "--no-renames", f"{base}...{merge}")
        return [line for line in out.splitlines() if line]

    def show(self, ref: str, path: str) -> str | None:
        result = self._read("show", f"{ref}:{path}")
        return result.text if result.ok else None

    def show_bytes(self, ref: str, path: str) -> bytes:
        """A file's exact content at `ref` (binary files included)."""
        result = self._read("show", f"{ref}:{path}")
        if not result.ok:
            self._out("show", f"{ref}:{path}")  # raises with git's message
        return result.stdout

    def show_many(self, ref: str, paths: list[str]) -> dict[str, bytes | None]:
        """Files' exact content at `ref`, read by one `git cat-file --batch` (one process
        for a plan of many services); None for a path that is no file there."""
        # The batch protocol is line-based; git prints such a name quoted, never raw.
        assert not any("\n" in path for path in paths), paths
        asked = "".join(f"{ref}:{path}\n" for path in paths).encode()
        argv = self._argv("cat-file", "--batch")
        result = self.runner.read(argv, timeout=READ_TIMEOUT, stdin=asked)
        if not result.ok:
            self._out("cat-file", "--batch")  # raises with git's message
        found: dict[str, bytes | None] = {}
        out, at = result.stdout, 0
        for path in paths:
            end = out.index(b"\n", at)
            header = out[at:end].split()
            at = end + 1
            # `<name> missing`, or `<sha> <type> <size>` followed by the content and LF.
            if len(header) != 3:
                found[path] = None
                continue
            size = int(header[2])
            content = out[at : at + size]
            at += size + 1
            found[path] = content if header[1] == b"blob" else None
        return found

    def files_in(self, ref: str, dirs: list[str]) -> set[str]:
        """Every file below each of `dirs` at `ref`, repo-relative, in one `ls-tree`."""
        if not dirs:
            return set()
        found = self._maybe("ls-tree", "-r", "--name-only", ref, "--", *dirs)
        return {line for line in (found or "").splitlines() if line}

    def exists(self, ref: str, path: str) -> bool:
        return self._read("cat-file", "-e", f"{ref}:{path}").ok

    def list_dir(self, ref: str, path: str) -> list[str]:
        found = self._maybe("ls-tree", "--name-only", ref, f"{path.rstrip('/')}/")
        return [PurePosixPath(line).name for line in (found or "").splitlines() if line]

    def files_under(self, ref: str, path: str) -> list[str]:
        """Every file below `path` at `ref`, recursively, as repo-relative paths."""
        found = self._maybe("ls-tree", "-r", "--name-only", ref, f"{path.rstrip('/')}/")
        return [line for line in (found or "").splitlines() if line]

    def subjects(self, base: str, merge: str) -> list[str]:
        """`<short sha> <subject>` for each commit in base..merge, newest first."""
        out = self._out("log", "--format=%h %s", f"{base}..{merge}")
        return [line for line in out.splitlines() if line]

    def first_parent_chain(self, base: str, merge: str) -> list[str]:
        """The commits base..merge along first parents, newest first: what a release merged."""
        out = self._out("rev-list", "--first-parent", f"{base}..{merge}")
        return [line for line in out.splitlines() if line]

    def find_commit(self, since: str, line: str) -> str | None:
        """The newest commit in since..HEAD whose message has exactly this line."""
        out = self._out("log", "--format=%H", "--fixed-strings", f"--grep={line}", f"{since}..HEAD")
        found = [sha for sha in out.splitlines() if sha]
        return found[0] if found else None

    def staged_only(self) -> bool:
        """Changes are all staged (what `git revert --no-commit` leaves), nothing else."""
        lines = self.dirty()
        return bool(lines) and all(line[0] not in " ?" and line[1] == " " for line in lines)

    def is_merge(self, sha: str) -> bool:
        return len(self._out("rev-list", "--parents", "-n", "1", sha).split()) > 2

    def remote_url(self, remote: str = "origin") -> str | None:
        """Where `remote` points (None: no such remote)."""
        return self._maybe("remote", "get-url", remote)

    def tree(self, ref: str, path: str = "") -> str:
        """The tree id of `path` at `ref` (empty when it does not exist there)."""
        return self._maybe("rev-parse", f"{ref}:{path}") or ""

    # -- changes ------------------------------------------------------------------------
    def fetch(self) -> Result:
        """`git fetch`, tried again when another git process holds a ref's lock.

        Two runs planning at once (a release and a dry run, or two releases of
        which the lock will let one through) fetch into the same refs; git then
        refuses one with "cannot lock ref". That is a wait, not a failure.
        """
        for pause in FETCH_RETRIES:
            result = self.runner.run(fetch_argv(self.path), timeout=FETCH_TIMEOUT, check=False)
            if result.ok or not _LOCKED.search(result.output):
                break
            time.sleep(pause)
        if not result.ok:
            raise CommandFailed(result)
        return result

    def pull(self, branch: str) -> Result:
        return self.runner.run(pull_argv(self.path, branch), timeout=PULL_TIMEOUT, check=False)

    def switch(self, branch: str) -> Result:
        return self.runner.run(switch_argv(self.path, branch), timeout=READ_TIMEOUT)

    def checkout(self, branch: str) -> Result:
        return self.runner.run(checkout_argv(self.path, branch), timeout=READ_TIMEOUT, check=False)

    def apply(self, argv: list[str]) -> Result:
        """Run one change built by the `*_argv` functions above (a revert, a commit)."""
        return self.runner.run(argv, timeout=PULL_TIMEOUT, check=False)

    def abort_revert(self) -> Result:
        return self.runner.run(abort_revert_argv(self.path), timeout=READ_TIMEOUT)

    def push(self, branch: str) -> Result:
        return self.runner.run(push_argv(self.path, branch), timeout=PULL_TIMEOUT, check=False)


def changed_services(files: list[str]) -> list[str]:
    """The `packages/<service>/` dirs touched by a list of changed paths, sorted."""
    found = set()
    for name in files:
        parts = PurePosixPath(name).parts
        if len(parts) >= 3 and parts[0] == "packages":
            found.add(parts[1])
    return sorted(found)
