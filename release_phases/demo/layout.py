"""Every name and path of one demo, derived from its name and directory.

A demo owns exactly what carries its name: the label ``io.release-phases.demo=<name>``,
the compose projects ``rp<name>-<service>``, the images ``release-phases-<name>/…`` and
its directory, which it marks with a file so that it never empties a directory it
did not make. Two demos of different names never touch each other's things (the
selftest runs one of its own beside a user's).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

LABEL = "io.release-phases.demo"
#: The image's content digest, so a rerun imports only images that changed.
DIGEST_LABEL = "io.release-phases.demo.digest"
MARKER = ".release-phases-demo"
DEFAULT_NAME = "demo"
TICKET = "DEMO-1"
SERVICES = ("db", "web", "worker")
#: What the demo's database holds at version 1; a revert must bring exactly this back.
SEED_RECORDS = "1,ada\n2,grace\n3,linus\n"

# Lowercase only: compose project names and image repositories must be.
_NAME = re.compile(r"[a-z][a-z0-9]{0,29}")


def valid_name(name: str) -> bool:
    return _NAME.fullmatch(name) is not None


def default_dir(name: str, env: dict[str, str] | None = None) -> Path:
    """``$XDG_CACHE_HOME/release-phases/<name>``, else under ``~/.cache``."""
    env = dict(os.environ) if env is None else env
    cache = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "release-phases" / name


def busybox_cache(env: dict[str, str] | None = None) -> Path:
    """Where a busybox fetched with `apt-get download` is kept, shared by all demos."""
    return default_dir("busybox-static", env)


@dataclass(frozen=True)
class Layout:
    name: str
    root: Path

    def __post_init__(self) -> None:
        if not valid_name(self.name):
            raise ValueError(f"invalid demo name {self.name!r}")

    # -- docker -------------------------------------------------------------------------
    @property
    def label(self) -> str:
        """The label filter of everything this demo made: ``key=value``."""
        return f"{LABEL}={self.name}"

    def project(self, service: str) -> str:
        return f"rp{self.name}-{service}"

    @property
    def projects(self) -> tuple[str, ...]:
        return tuple(self.project(s) for s in SERVICES)

    @property
    def container_prefix(self) -> str:
        return f"rp{self.name}-"

    def repository(self, service: str) -> str:
        return f"release-phases-{self.name}/{service}"

    def image(self, service: str, tag: str) -> str:
        return f"{self.repository(service)}:{tag}"

    # -- files --------------------------------------------------------------------------
    @property
    def marker(self) -> Path:
        return self.root / MARKER

    @property
    def origin(self) -> Path:
        return self.root / "origin.git"

    @property
    def dev(self) -> Path:
        """A developer's clone: where the ticket's branch is made and merged."""
        return self.root / "dev"

    @property
    def prod(self) -> Path:
        """The deploy host's clone: where the release runs."""
        return self.root / "prod"

    @property
    def workspace(self) -> Path:
        return self.prod / ".asd" / "workspace" / "releases"

    @property
    def state_file(self) -> Path:
        return self.workspace / f"{TICKET}.env"

    @property
    def log_file(self) -> Path:
        return self.workspace / f"{TICKET}.log"

    def reports(self, mode: str) -> list[Path]:
        """The HTML reports of ``mode`` runs (release, revert), oldest first."""
        found = (self.prod / "reports").glob(f"{TICKET}-{mode}-*.html")
        return sorted(found, key=lambda p: p.stat().st_mtime)


def marker_owner(text: str) -> str | None:
    """The demo name a marker file names, or None when it is not one of ours."""
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "name" and valid_name(value):
            return value
    return None


def marker_text(name: str) -> str:
    return (
        "# Made by `release-phases demo`: a rerun empties this directory, "
        "`release-phases demo --clean` removes it.\n"
        f"name={name}\n"
    )
