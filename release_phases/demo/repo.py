"""The demo's deploy repository: a bare origin, a developer's clone and prod.

The files are written as an operator would write them, comments included, since a
newcomer reads them next: `packages/<service>/manifest.yaml` and `compose.yaml` for
a web app, a worker and a database, and a `pytest.ini`. The ticket is a feature
branch merged with --no-ff on origin, as a pull request would be.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from release_phases.demo.images import HEALTH_PATH, PORT
from release_phases.demo.layout import LABEL, TICKET, Layout
from release_phases.host.shell import Runner

IDENTITY = ("-c", "user.name=release-phases demo", "-c", "user.email=demo@example.invalid")


def free_port() -> int:
    """A port nothing listens on now, on the loopback interface the services bind to."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class Ports:
    web: int
    db: int

    @classmethod
    def free(cls) -> Ports:
        return cls(web=free_port(), db=free_port())


def ticket_scripts() -> list[tuple[str, bytes]]:
    """The demo ticket's scripts, as installed with this package: (name, content)."""
    found = resources.files("release_phases.demo").joinpath("releases")
    return sorted(
        (entry.name, entry.read_bytes())
        for entry in found.iterdir()
        if entry.name.startswith(f"{TICKET}-")
    )


# -- the files ------------------------------------------------------------------------------


def pytest_ini(layout: Layout) -> str:
    return f"""\
[pytest]
# The deploy repository of the release-phases demo. A pytest.ini of its own keeps
# pytest's rootdir here, whatever directory above holds another configuration.
# CONTAINER_PREFIX, given to hooks and ticket scripts:
container_prefix = {layout.container_prefix}
"""


def readme(layout: Layout) -> str:
    return f"""\
# The release-phases demo's deploy repository

Made by `release-phases demo --name {layout.name}`; a rerun of the demo replaces it.

- `packages/web`: a web app (busybox httpd, /cgi-bin/health)
- `packages/worker`: a worker (a loop; its health is a command run in it)
- `packages/db`: a database whose records are a file in the volume `db-data`,
  backed up by every release that changes it
- `releases/`: the scripts of ticket {TICKET}, run in the ticket phase
"""


def manifest(layout: Layout, service: str, tag: str, ports: Ports) -> str:
    image = f'image: {{name: {layout.repository(service)}, tag: "{tag}"}}\n'
    if service == "web":
        return image + (
            "health:\n"
            f"  endpoint: http://127.0.0.1:{ports.web}{HEALTH_PATH}\n"
            "  timeout: 6\n"
            "# When db is in the same release, it is migrated (and healthy) first.\n"
            "after: [db]\n"
        )
    if service == "db":
        return image + (
            "health:\n"
            "  # 200 once the data is in the schema of the running version\n"
            f"  endpoint: http://127.0.0.1:{ports.db}{HEALTH_PATH}\n"
            f'  tcp: "127.0.0.1:{ports.db}"\n'
            "  timeout: 20\n"
            "backup:\n"
            "  # archived in prepare; a revert puts it back as it was\n"
            "  volumes: [db-data]\n"
        )
    return image + (
        "health:\n"
        "  # run in the worker's container; healthy on exit 0\n"
        "  command: [test, -f, /tmp/heartbeat]\n"
        "  # and the container's own HEALTHCHECK (compose.yaml) says healthy\n"
        "  docker: true\n"
        "  timeout: 20\n"
    )


def compose_file(layout: Layout, service: str, tag: str, ports: Ports) -> str:
    label = f"      {LABEL}: {layout.name}\n"
    lines = [
        f"name: {layout.project(service)}\n",
        "services:\n",
        f"  {service}:\n",
        f"    image: {layout.image(service, tag)}\n",
        "    labels:\n",
        label,
        # busybox as PID 1 ignores SIGTERM: do not wait Compose's default 10 s for it.
        "    stop_grace_period: 1s\n",
    ]
    if service in ("web", "db"):
        port = ports.web if service == "web" else ports.db
        lines.append(f'    ports: ["127.0.0.1:{port}:{PORT}"]\n')
    if service == "db":
        lines.append("    volumes: [db-data:/data]\n")
    if service == "worker":
        lines += [
            "    healthcheck:\n",
            "      test: [CMD, test, -f, /tmp/heartbeat]\n",
            "      interval: 1s\n",
        ]
    lines += ["networks:\n", "  default:\n", "    labels:\n", "  " + label]
    if service == "db":
        lines += ["volumes:\n", "  db-data:\n", "    labels:\n", "  " + label]
    return "".join(lines)


def write_service(layout: Layout, worktree: Path, service: str, tag: str, ports: Ports) -> None:
    package = worktree / "packages" / service
    package.mkdir(parents=True, exist_ok=True)
    (package / "manifest.yaml").write_text(manifest(layout, service, tag, ports))
    (package / "compose.yaml").write_text(compose_file(layout, service, tag, ports))


# -- git ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeployRepo:
    layout: Layout
    ports: Ports
    runner: Runner

    def git(self, cwd: Path, *args: str) -> str:
        return self.runner.run(["git", *IDENTITY, *args], cwd=cwd).output

    def create(self, tags: dict[str, str]) -> None:
        """origin with every service at ``tags``, cloned as dev and as prod."""
        layout = self.layout
        self.runner.run(["git", "init", "-q", "--bare", "-b", "main", str(layout.origin)])
        self.runner.run(["git", "clone", "-q", str(layout.origin), str(layout.dev)])
        (layout.dev / "README.md").write_text(readme(layout))
        (layout.dev / "pytest.ini").write_text(pytest_ini(layout))
        for service, tag in tags.items():
            write_service(layout, layout.dev, service, tag, self.ports)
        self.git(layout.dev, "checkout", "-q", "-b", "main")
        self.git(layout.dev, "add", "-A")
        self.git(layout.dev, "commit", "-q", "-m", "web, worker and db at version 1")
        self.git(layout.dev, "push", "-q", "origin", "main")
        self.runner.run(["git", "clone", "-q", "-b", "main", str(layout.origin), str(layout.prod)])
        # The revert commits on prod and pushes: it needs an identity of its own.
        self.git(layout.prod, "config", "user.name", "release-phases demo (prod)")
        self.git(layout.prod, "config", "user.email", "prod@example.invalid")

    def merge_ticket(self, tags: dict[str, str], subject: str) -> str:
        """The ticket's branch (services moved to ``tags``, its scripts added), merged
        into main on origin with --no-ff; the merge commit's sha."""
        layout, dev = self.layout, self.layout.dev
        branch = f"feature/{TICKET}"
        self.git(dev, "checkout", "-q", "-b", branch)
        for service, tag in tags.items():
            write_service(layout, dev, service, tag, self.ports)
        releases = dev / "releases"
        releases.mkdir(exist_ok=True)
        for name, content in ticket_scripts():
            (releases / name).write_bytes(content)
            (releases / name).chmod(0o755)
        self.git(dev, "add", "-A")
        self.git(dev, "commit", "-q", "-m", f"{TICKET}: {subject}")
        self.git(dev, "checkout", "-q", "main")
        self.git(dev, "merge", "-q", "--no-ff", "-m", f"Merge branch '{branch}'", branch)
        self.git(dev, "push", "-q", "origin", "main")
        return self.git(dev, "rev-parse", "HEAD").strip()
