"""The options of one run, as the operator gave them: checked once, then frozen.

Pure values: `Options.command` renders the command line an operator would type
for this run (or another mode's), which every "next command" is built from.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from release_phases.errors import ConfigError

TICKET_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")


def validate_ticket(ticket: str | None) -> str:
    if ticket is None:
        raise ConfigError(
            "--ticket is required for release tests",
            next_command="pytest -m release --ticket <id>",
        )
    if not TICKET_RE.fullmatch(ticket) or ticket.startswith((".", "-")):
        raise ConfigError(
            f"--ticket {ticket!r} is not a ticket id: use 1 to 64 of A-Z a-z 0-9 . _ -, "
            "not starting with . or -",
        )
    return ticket


#: A branch name git would take, and nothing a shell or git could read otherwise.
BRANCH_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._/-]{0,199}")
SHA_RE = re.compile(r"[0-9a-f]{7,40}")
#: A package directory that names a service: the same alphabet as a ticket id.
SERVICE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def validate_branch(branch: str) -> str:
    """A plain branch name: refused when git would not take it, or it could be an option
    or a revision expression (`-x`, `a..b`, `@{`)."""
    bad = (
        not BRANCH_RE.fullmatch(branch)
        or ".." in branch
        or "//" in branch
        or branch.endswith(("/", ".", ".lock"))
        or any(part.startswith(".") for part in branch.split("/"))
    )
    if bad:
        raise ConfigError(
            f"--branch {branch!r} is not a branch name: use A-Z a-z 0-9 . _ - /, no '..', "
            "no part starting with '.', not ending with '/', '.' or '.lock'",
        )
    return branch


def validate_sha(value: str) -> str:
    """--base-sha: a commit's sha (7 to 40 hex digits), not any revision expression."""
    if not SHA_RE.fullmatch(value):
        raise ConfigError(
            f"--base-sha {value!r} is not a commit sha (7 to 40 of 0-9 a-f); find it with "
            "`git reflog`",
        )
    return value


def validate_service(name: str, where: str) -> str:
    """A directory under packages/ that would name a service."""
    if not SERVICE_RE.fullmatch(name):
        raise ConfigError(
            f"{where}: {name!r} is not a service name: use 1 to 64 of A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit",
            next_command="rename the directory in the deploy repo, commit, then rerun",
        )
    return name


@dataclass(frozen=True)
class Options:
    ticket: str
    repo: Path
    branch: str = "main"
    force_allow_non_main: bool = False
    from_phase: str | None = None
    base_sha: str | None = None
    container_prefix: str = ""
    script_timeout: float = 1800.0
    #: Seconds compose waits for a container to stop; None: compose's own rule (the
    #: service's stop_grace_period, else Compose's default).
    stop_timeout: int | None = None
    #: Seconds one compose command may take before it counts as hung.
    compose_timeout: float = 600.0
    #: Try `docker compose pull` for images missing on the host.
    pull: bool = True
    #: Services migrated at once (`--parallel`).
    parallel: int = 1
    #: release, revert or return_to_main: which `-m` run this is.
    mode: str = "release"
    skip_git: bool = False
    skip_data: bool = False
    #: Where `repo` was named, for a message about it: `--repo x`, the ini option, or
    #: the current directory (the default).
    repo_source: str = "the current directory"
    #: The ini values typed on the command line (`-o name=value`), as typed.
    ini_overrides: tuple[str, ...] = ()

    def command(self, *extra: str, mode: str | None = None) -> str:
        """The pytest command line an operator would type for this run (or `mode`'s).

        It keeps what the operator gave that the next run needs to do the same: the
        repository, the branch, `--parallel`, a revert's `--skip-*`, the `--base-sha`
        of a release not yet past prepare, and every `-o name=value` (a
        `release_pull=false` dropped would make the next run pull).
        """
        mode = mode or self.mode
        parts = ["pytest", "-m", mode]
        if mode != "return_to_main":
            parts += ["--ticket", self.ticket]
        if self.repo != Path.cwd():
            parts += ["--repo", str(self.repo)]
        if self.branch != "main" and mode == "release":
            parts += ["--branch", self.branch, "--force-allow-non-main"]
        if self.parallel > 1 and mode in ("release", "revert"):
            parts += ["--parallel", str(self.parallel)]
        if mode == "revert" == self.mode:
            # A rerun must leave alone what the operator chose to leave alone.
            chosen = {"--skip-git": self.skip_git, "--skip-data": self.skip_data}
            parts += [flag for flag, on in chosen.items() if on and flag not in extra]
        if (
            self.base_sha
            and mode == "release" == self.mode
            and not _names(extra, "--base-sha", "--from", "-k")
        ):
            # The pull was done by hand: a rerun of prepare without it finds nothing to
            # release. A resume (`--from`, `-k`) reads BASE_SHA from the state file instead.
            parts += ["--base-sha", self.base_sha]
        overrides = [arg for value in self.ini_overrides for arg in ("-o", value)]
        # extra may hold placeholders (`--base-sha <sha>`) an operator fills in: as is.
        # The -o values come last, so that the command reads as before up to them.
        return " ".join(
            [shlex.join(parts), *extra, *([shlex.join(overrides)] if overrides else [])]
        )


def typed_overrides(args: Sequence[str]) -> tuple[str, ...]:
    """The `-o name=value` among the command line's own arguments, in order: those of
    addopts or PYTEST_ADDOPTS apply to the next command anyway, and are left out."""
    found: list[str] = []
    words = iter(args)
    for word in words:
        if word in ("-o", "--override-ini"):
            value = next(words, None)
            if value is not None:
                found.append(value)
        elif word.startswith("--override-ini="):
            found.append(word.partition("=")[2])
        elif word.startswith("-o") and not word.startswith("--"):
            found.append(word[2:])
    return tuple(found)


def _names(extra: tuple[str, ...], *options: str) -> bool:
    """Does one of `extra`'s words start with one of `options` (`--from=migrate`)?"""
    return any(word.startswith(options) for part in extra for word in part.split())
