"""One release context: the options, the plan and the live state of a run.

Phases read this object and record facts through their `step`; only the plugin
writes the state file and the log. The plan itself is made in `plan.py`.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from release_phases import PHASES, manifest, scripts
from release_phases import state as statefile
from release_phases.errors import ConfigError
from release_phases.host import ComposeProject, Host
from release_phases.host.compose import project_of
from release_phases.host.git import Git
from release_phases.manifest import Manifest

if TYPE_CHECKING:
    from release_phases.plan import Plan

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
    stop_timeout: int = 30
    #: Seconds one compose command may take before it counts as hung.
    compose_timeout: float = 600.0
    #: Try `docker compose pull` for images missing on the host.
    pull: bool = True
    #: release, revert or return_to_main: which `-m` run this is.
    mode: str = "release"
    skip_git: bool = False
    skip_data: bool = False

    def command(self, *extra: str, mode: str | None = None) -> str:
        """The pytest command line an operator would type for this run (or `mode`'s)."""
        mode = mode or self.mode
        parts = ["pytest", "-m", mode]
        if mode != "return_to_main":
            parts += ["--ticket", self.ticket]
        if self.repo != Path.cwd():
            parts += ["--repo", str(self.repo)]
        if self.branch != "main" and mode == "release":
            parts += ["--branch", self.branch, "--force-allow-non-main"]
        # extra may hold placeholders (`--base-sha <sha>`) an operator fills in: as is.
        return " ".join([shlex.join(parts), *extra])


@dataclass
class ReleaseContext:
    options: Options
    plan: Plan | None = None
    #: The live state, owned by the plugin's Recorder; phases read it.
    state: statefile.State | None = None
    #: The state as this run found it, before its first phase began.
    previous: statefile.State | None = None

    @property
    def phases(self) -> tuple[str, ...]:
        """The phases this run goes through, in order."""
        return PHASES if self.options.mode == "release" else (self.options.mode,)

    # -- paths --------------------------------------------------------------------------
    @property
    def repo(self) -> Path:
        return self.options.repo

    @property
    def ticket(self) -> str:
        return self.options.ticket

    @property
    def workspace(self) -> Path:
        return self.repo / ".asd" / "workspace"

    @property
    def state_path(self) -> Path:
        return statefile.path_for(self.workspace, self.ticket)

    @property
    def log_path(self) -> Path:
        return self.workspace / "releases" / f"{self.ticket}.log"

    @property
    def lock_path(self) -> Path:
        return self.workspace / "releases" / ".lock"

    @property
    def backups_root(self) -> Path:
        return self.workspace / "backups"

    @property
    def reports_dir(self) -> Path:
        return self.repo / "reports"

    # -- machinery ----------------------------------------------------------------------
    @cached_property
    def host(self) -> Host:
        return Host(self.repo)

    @property
    def git(self) -> Git:
        return self.host.git

    def project(self, manifest: Manifest) -> ComposeProject:
        """The compose project of a service, as its manifest in the worktree declares it."""
        return project_of(self.host.compose, manifest, self.options.stop_timeout)

    def manifest(self, service: str) -> Manifest:
        """The service's manifest as it stands in the worktree (after the pull)."""
        return manifest.load(self.repo, service)

    def script_env(self, service: str | None = None) -> dict[str, str]:
        """The environment of a hook (with its SERVICE) or a ticket script."""
        st = self.state
        return scripts.script_env(
            ticket=self.ticket,
            base_sha=st.base_sha,
            merge_sha=st.merge_sha,
            services=st.services,
            container_prefix=self.options.container_prefix,
            repo_root=self.repo,
            service=service,
        )

    def saved_state(self) -> statefile.State:
        return statefile.load(self.state_path, self.ticket)
