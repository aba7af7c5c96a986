"""Checks of the host that every run's preflight makes before it changes anything.

Each raises a `ReleaseError` saying what the caller leaves untouched and the
command to run again (the run's own, from `Options.command`).
"""

from __future__ import annotations

import os

from release_phases.context import ReleaseContext
from release_phases.errors import ReleaseError

SHOWN = 15


def docker_version(ctx: ReleaseContext, untouched: str) -> str:
    """The Docker Engine's version, or an error when it cannot be reached."""
    try:
        return ctx.host.engine.version()
    except Exception as exc:  # the SDK raises several kinds for one meaning: unreachable
        raise ReleaseError(
            f"the Docker Engine is not reachable at {docker_host()}: {exc}",
            untouched=untouched,
            next_command="start Docker (systemctl start docker), or point DOCKER_HOST at it"
            f" (`docker info` says when it answers), then {ctx.options.command()}",
        ) from None


def docker_host() -> str:
    """Where the SDK and the Compose CLI look for the engine, as they both decide it:
    DOCKER_HOST, else the default socket (a docker context other than the default is
    the CLI's alone, and not read here)."""
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock (the default)"


def refuse_dirty(ctx: ReleaseContext, dirty: list[str], untouched: str) -> None:
    """Refuse a worktree with changes (the engine's own .asd/ and reports/ aside)."""
    if not dirty:
        return
    shown = "\n".join(f"  {line}" for line in dirty[:SHOWN])
    more = f"\n  ... and {len(dirty) - SHOWN} more" if len(dirty) > SHOWN else ""
    raise ReleaseError(
        f"the worktree of {ctx.repo} is not clean:\n{shown}{more}",
        untouched=untouched,
        next_command="commit, stash or remove those changes (git status), then "
        + ctx.options.command(),
    )
