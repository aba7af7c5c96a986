"""The host layer: the only code that runs anything on this machine.

- `shell.Runner` runs argv lists (process groups killed whole, timeouts, output kept);
- `git.Git` is the deploy repository: every git command, reads included, through it;
- `compose.ComposeProject` builds one service's compose commands as argv lists;
- `engine.Engine` asks the Docker Engine, through the SDK, what runs.

`Host` binds them for one deploy repository. Phase code builds or picks a
command and hands it to `Host.run`; nothing above this package starts a process.
Everything is made on first use, so a run that never touches Docker never
imports the SDK or looks for Compose.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cached_property
from pathlib import Path
from typing import IO, Any, TypeVar

from release_phases.errors import ReleaseError
from release_phases.host.compose import (
    LOG_TAIL,
    Compose,
    ComposeProject,
    detect,
    images_in_config,
    json_document,
)
from release_phases.host.engine import Engine
from release_phases.host.git import Git
from release_phases.host.shell import Argv, CommandFailed, Result, Runner, render
from release_phases.host.swarm import Swarm

T = TypeVar("T")

#: Seconds a short query of Compose (its version, its config) may take.
QUERY_TIMEOUT = 60.0


class Host:
    """This machine as one release sees it: a runner, the repo's git, Compose, Docker."""

    def __init__(self, repo: Path, runner: Runner | None = None) -> None:
        self.repo = repo
        self.runner = runner or Runner()

    @cached_property
    def git(self) -> Git:
        return Git(self.repo, self.runner)

    @cached_property
    def engine(self) -> Engine:
        return Engine()

    @cached_property
    def swarm(self) -> Swarm:
        """The engine's swarm (stacks, services, tasks), through the same SDK client."""
        return Swarm(self.engine.client)

    @cached_property
    def compose(self) -> Compose:
        """The Compose v2 to drive (ReleaseError when there is none)."""
        return detect(self.runner)

    def say(self, line: str) -> None:
        """A line for the operator before a wait (see `Runner.say`)."""
        self.runner.say(line)

    def run(
        self,
        argv: Argv,
        *,
        timeout: float | None,
        stream: bool = False,
        check: bool = True,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        stdin_from: Path | None = None,
        stdout_to: Path | None = None,
    ) -> Result:
        """Run ``argv`` (see `Runner.run`; ``stdout_to`` leaves only stderr in the output)."""
        return self.runner.run(
            argv,
            timeout=timeout,
            stream=stream,
            check=check,
            cwd=cwd,
            env=env,
            stdin_from=stdin_from,
            stdout_to=stdout_to,
        )

    def pipe(self, argv: Argv, reader: Callable[[IO[bytes]], T]) -> tuple[Result, T]:
        """Run ``argv`` with ``reader`` reading its stdout as it comes (see `Runner.pipe`)."""
        return self.runner.pipe(argv, reader)

    def remove_leftover_helpers(self) -> list[str]:
        """Remove the throwaway containers a killed run of this repository left (one
        may hold a volume a restore must remove); their names."""
        found = self.engine.helpers_of(str(self.repo))
        for container in found:
            self.engine.remove(container)
        return [str(c.name) for c in found]

    # -- compose, run -------------------------------------------------------------------
    def recreate(self, project: ComposeProject, *, timeout: float, stream: bool = True) -> Result:
        """`up` of the project's services; a failure names the logs command to read."""
        try:
            return self.run(project.up(), timeout=timeout, stream=stream)
        except CommandFailed as exc:
            raise CommandFailed(exc.result, next_command=render(project.logs())) from None

    def logs(self, project: ComposeProject, tail: int = LOG_TAIL) -> str:
        """The last `tail` log lines of each container; best effort, never raises on exit."""
        return self.run(project.logs(tail), check=False, timeout=QUERY_TIMEOUT).output

    def compose_config(self, project: ComposeProject) -> dict[str, Any]:
        """The project as Compose resolves it (`config --format json`)."""
        argv = project.config()
        result = self.run(argv, check=False, timeout=QUERY_TIMEOUT)
        if not result.ok:
            raise CommandFailed(
                result,
                untouched="every container: the compose file could not be read",
                next_command=render(argv),
            )
        try:
            return json_document(result.output)
        except ValueError as exc:
            raise ReleaseError(
                f"cannot read `{render(argv)}`: {exc}",
                untouched="every container",
                next_command=render(argv),
            ) from None

    def missing_images(
        self, project: ComposeProject, config: dict[str, Any] | None = None
    ) -> list[str]:
        """Images the services need that are not in the local engine (no registry asked).

        ``config``: the project's `compose_config`, when the caller has it already.
        """
        if config is None:
            config = self.compose_config(project)
        try:
            images = images_in_config(config, project.services)
        except ValueError as exc:
            raise ReleaseError(
                f"cannot read the images of {', '.join(project.services)} from "
                f"`{render(project.config())}`: {exc}",
                untouched="every container",
                next_command=render(project.config()),
            ) from None
        return [image for image in images if self.engine.image_id(image) is None]


__all__ = ["ComposeProject", "Host"]
