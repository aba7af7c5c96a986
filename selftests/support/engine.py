"""Run the engine the way an operator does: `pytest -m release --ticket T` in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from release_phases import eventlog
from release_phases.state import State


@dataclass
class Run:
    argv: list[str]
    rc: int
    output: str
    repo: Path
    ticket: str

    @property
    def state_path(self) -> Path:
        return self.repo / ".asd/workspace/releases" / f"{self.ticket}.env"

    @property
    def log_path(self) -> Path:
        return self.repo / ".asd/workspace/releases" / f"{self.ticket}.log"

    @property
    def state(self) -> State:
        return State.from_text(self.state_path.read_text(), str(self.state_path))

    @property
    def events(self) -> list[dict[str, str]]:
        return [eventlog.parse_line(line) for line in self.log_path.read_text().splitlines()]

    def event(self, phase: str, event: str) -> dict[str, str]:
        found = [e for e in self.events if e["phase"] == phase and e["event"] == event]
        assert found, f"no {phase} {event} event in:\n{self.log_path.read_text()}"
        return found[-1]

    def __str__(self) -> str:
        return f"$ {' '.join(self.argv)}  -> rc {self.rc}\n{self.output}"


#: busybox httpd as PID 1 ignores SIGTERM, so waiting the default 30 s for each stop
#: would only slow the tests down; and there is no registry here to pull from.
#: hypothesis (a dev extra, for the fuzzing selftests) registers a pytest plugin that
#: imports all of hypothesis at the end of every run, about 0.7 s here; a deploy host
#: has no dev extras, so the engine's runs leave it out.
TEST_INI = ["-o", "release_stop_timeout=1", "-o", "release_pull=false", "-p", "no:hypothesispytest"]
#: TEST_INI's ini values as the engine's next commands repeat them.
TEST_INI_TYPED = "-o release_stop_timeout=1 -o release_pull=false"


def argv_of(ticket: str, *args: str, mode: str = "release") -> list[str]:
    """The engine's command line as the selftests run it."""
    return [sys.executable, "-m", "pytest", "-m", mode, "--ticket", ticket, *TEST_INI, *args]


def run(
    repo: Path,
    ticket: str,
    *args: str,
    mode: str = "release",
    timeout: float = 600,
    env: dict[str, str] | None = None,
) -> Run:
    argv = argv_of(ticket, *args, mode=mode)
    full_env = {**os.environ, **(env or {})}
    full_env.pop("PYTEST_ADDOPTS", None)
    proc = subprocess.run(
        argv,
        cwd=repo,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Run(argv, proc.returncode, proc.stdout, repo, ticket)
