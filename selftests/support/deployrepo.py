"""A real deploy repository for tests: a bare `origin`, a prod clone and a dev clone.

The dev clone plays the developers merging pull requests; the prod clone is the
host the engine releases on. Everything is real git through GitPython.
"""

from __future__ import annotations

import socket
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import git
import yaml

from selftests.support.images import HEALTH_PATH, HTTP_PORT, LABEL

#: Ports handed out in this session, never handed out twice: the kernel may offer a port
#: again as soon as an earlier test's container is gone, while the Docker daemon still
#: counts it allocated ("port is already allocated", seen once in a CI run).
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


@dataclass
class Service:
    name: str
    project: str
    port: int
    repository: str
    tag: str = "1"
    timeout: float = 15.0
    volumes: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    containers: tuple[str, ...] = ()
    #: The manifest's health: section; None: the endpoint of the first container.
    health: dict[str, object] | None = None
    #: Merged into every compose service of the package (healthcheck:, deploy: ...).
    compose: dict[str, object] = field(default_factory=dict)
    #: The manifest's backup: section; None: `volumes` and `paths`, when there are any.
    backup: dict[str, object] | None = None
    #: driver_opts of its volumes (the local driver's): a bind of another directory, say.
    volume_options: dict[str, str] | None = None
    #: The manifest's engine: `swarm` writes a stack file (no `name:`, no port of its own;
    #: the stack is named after the service, which `project` must then be).
    engine: str = "compose"
    #: Merged into the compose file's top level (networks: ...).
    top: dict[str, object] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}{HEALTH_PATH}"

    @property
    def image(self) -> str:
        return f"{self.repository}:{self.tag}"


@dataclass
class DeployRepo:
    root: Path
    run_label: str
    origin: Path = field(init=False)
    dev: Path = field(init=False)
    prod: Path = field(init=False)
    services: dict[str, Service] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.origin = self.root / "origin.git"
        self.dev = self.root / "dev"
        self.prod = self.root / "prod"
        git.Repo.init(self.origin, bare=True, initial_branch="main")
        repo = git.Repo.clone_from(str(self.origin), str(self.dev))
        _identity(repo)
        (self.dev / "README.md").write_text("deploy repo for selftests\n")
        repo.index.add(["README.md"])
        repo.index.commit("initial commit")
        repo.git.push("origin", "HEAD:main")

    @property
    def dev_repo(self) -> git.Repo:
        return git.Repo(self.dev)

    @property
    def prod_repo(self) -> git.Repo:
        return git.Repo(self.prod)

    def clone_prod(self) -> Path:
        repo = git.Repo.clone_from(str(self.origin), str(self.prod), branch="main")
        _identity(repo)
        return self.prod

    # -- what developers do ------------------------------------------------------------
    def write_service(self, svc: Service, *, extra_manifest: dict | None = None) -> None:
        self.services[svc.name] = svc
        pkg = self.dev / "packages" / svc.name
        pkg.mkdir(parents=True, exist_ok=True)
        manifest = {
            "image": {"name": svc.repository, "tag": svc.tag},
            "health": svc.health
            or {"endpoint": svc.endpoint, "expected_code": 200, "timeout": svc.timeout},
        }
        if svc.containers:
            manifest["containers"] = list(svc.containers)
        if svc.backup is not None:
            manifest["backup"] = svc.backup
        elif svc.volumes or svc.paths:
            manifest["backup"] = {"volumes": list(svc.volumes), "paths": list(svc.paths)}
        if svc.engine != "compose":
            manifest["engine"] = svc.engine
        manifest.update(extra_manifest or {})
        (pkg / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
        swarm = svc.engine == "swarm"
        compose: dict[str, object] = {
            # `docker stack deploy` refuses `name:`; a stack is named on its command line.
            **({} if swarm else {"name": svc.project}),
            "services": {
                c: {
                    "image": svc.image,
                    "labels": {LABEL: self.run_label},
                    "ports": [f"127.0.0.1:{svc.port}:{HTTP_PORT}"] if i == 0 and not swarm else [],
                    "volumes": [f"{v}:/data/{v}" for v in svc.volumes],
                    "stop_grace_period": "1s",
                    **svc.compose,
                }
                for i, c in enumerate(svc.containers or (svc.name,))
            },
        }
        if svc.volumes:
            compose["volumes"] = {
                v: {
                    "labels": {LABEL: self.run_label},
                    **({"driver_opts": svc.volume_options} if svc.volume_options else {}),
                }
                for v in svc.volumes
            }
        compose.update(svc.top)
        (pkg / "compose.yaml").write_text(yaml.safe_dump(compose, sort_keys=False))

    def write(self, relpath: str, text: str, mode: int | None = None) -> Path:
        path = self.dev / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        if mode is not None:
            path.chmod(mode)
        return path

    def commit(self, message: str) -> str:
        repo = self.dev_repo
        repo.git.add("-A")
        repo.index.commit(message)
        return repo.head.commit.hexsha

    def push(self, branch: str = "main") -> str:
        repo = self.dev_repo
        repo.git.push("origin", f"HEAD:{branch}")
        return repo.head.commit.hexsha

    def merge_feature(self, branch: str, message: str) -> str:
        """Commit the dev worktree on a feature branch and merge it with --no-ff."""
        repo = self.dev_repo
        repo.git.checkout("-b", branch)
        self.commit(message)
        repo.git.checkout("main")
        repo.git.merge("--no-ff", "-m", f"Merge branch '{branch}'", branch)
        return self.push()


def _identity(repo: git.Repo) -> None:
    with repo.config_writer() as cw:
        cw.set_value("user", "name", "selftest")
        cw.set_value("user", "email", "selftest@example.invalid")
