"""The options of one run, as the operator gave them: checked once, then frozen.

Pure values: `Options.command` renders the command line an operator would type
for this run (or another mode's), which every "next command" is built from.
"""

from __future__ import annotations

import re
import shlex
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
