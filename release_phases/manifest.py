"""`packages/<service>/manifest.yaml`: what a deployable service declares.

The loader distrusts what it reads: every key is checked for presence and type,
and an error names the file and the dotted key, so nothing runs on a half-valid
manifest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from release_phases.errors import ConfigError

COMPOSE_NAMES = ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml")


@dataclass(frozen=True)
class Image:
    name: str
    tag: str

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.tag}"


#: The ways a manifest may say how to tell the service is healthy.
HEALTH_KINDS = ("endpoint", "tcp", "docker", "command")


@dataclass(frozen=True)
class Health:
    """How to tell the service is healthy: every kind declared must pass."""

    #: An http(s) URL that answers `expected_code`.
    endpoint: str | None = None
    expected_code: int = 200
    #: `host:port` that accepts a TCP connection.
    tcp: str | None = None
    #: Every container reports Docker's own HEALTHCHECK status `healthy`.
    docker: bool = False
    #: An argv run in the service's first container (docker exec); healthy on exit 0.
    command: tuple[str, ...] = ()
    #: Seconds migrate (and revert) wait for all of them.
    timeout: float = 120.0

    @property
    def kinds(self) -> tuple[str, ...]:
        declared = {
            "endpoint": self.endpoint is not None,
            "tcp": self.tcp is not None,
            "docker": self.docker,
            "command": bool(self.command),
        }
        return tuple(kind for kind in HEALTH_KINDS if declared[kind])

    @property
    def tcp_address(self) -> tuple[str, int]:
        """`tcp` as (host, port); checked when the manifest was read."""
        assert self.tcp is not None
        host, _, port = self.tcp.rpartition(":")
        return host.strip("[]"), int(port)


@dataclass(frozen=True)
class Dump:
    """A logical backup: `command`'s stdout, taken in the running container, is the
    backup; `restore` reads it on stdin in the reverted, healthy container."""

    command: tuple[str, ...]
    restore: tuple[str, ...]


#: When volumes and paths are archived: in prepare while the service runs, or in
#: migrate between stopping the old containers and starting the new ones.
BACKUP_WHEN = ("prepare", "stopped")


@dataclass(frozen=True)
class Backup:
    volumes: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    dump: Dump | None = None
    when: str = "prepare"

    @property
    def empty(self) -> bool:
        return not self.volumes and not self.paths and self.dump is None

    @property
    def when_stopped(self) -> bool:
        return self.when == "stopped"


@dataclass(frozen=True)
class Manifest:
    service: str
    package_dir: Path
    image: Image
    health: Health
    containers: tuple[str, ...]
    compose_file: Path
    backup: Backup = field(default_factory=Backup)
    e2e_enabled: bool = False
    source: str = ""


def load_yaml(text: str) -> Any:
    """`yaml.safe_load`; a document nested too deep for its recursive parser is a YAML
    error like any other, not a RecursionError that ends the run with a traceback."""
    try:
        return yaml.safe_load(text)
    except RecursionError:
        raise yaml.YAMLError("it is nested too deeply to be read") from None


class _Reader:
    """Typed access to a YAML mapping that reports `file: key` on any mistake."""

    def __init__(self, source: str, data: Any) -> None:
        self.source = source
        if not isinstance(data, dict):
            raise self.error("", f"must be a mapping, got {type(data).__name__}")
        self.data = data

    def error(self, key: str, problem: str) -> ConfigError:
        where = f"{self.source}: {key}" if key else self.source
        return ConfigError(
            f"invalid manifest {where} {problem}",
            next_command=f"fix {self.source} and commit the fix, then rerun the release",
        )

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        node = self.data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.get(part, {}) if isinstance(node, dict) else {}
            if not isinstance(node, dict):
                raise self.error(key.rsplit(".", 1)[0], "must be a mapping")
        if parts[-1] not in node:
            if default is ...:
                raise self.error(key, "is required")
            return default
        value = node[parts[-1]]
        # bool is an int in Python; a manifest saying `timeout: true` is a mistake.
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
            names = " or ".join(k.__name__ for k in _as_tuple(kind))
            raise self.error(key, f"must be {names}, got {type(value).__name__} {value!r}")
        return value

    def str_list(self, key: str) -> tuple[str, ...]:
        value = self.get(key, list, [])
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item:
                raise self.error(f"{key}[{i}]", f"must be a non-empty string, got {item!r}")
        return tuple(value)


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def parse(
    text: str,
    *,
    service: str,
    package_dir: Path,
    source: str,
    exists: Callable[[str], bool] | None = None,
) -> Manifest:
    """Validate manifest text; ``package_dir`` is where relative paths resolve.

    ``exists(name)`` says whether a file of the package exists; by default the
    worktree is asked, while the collection-time plan asks the incoming commit.
    """
    if exists is None:

        def exists(name: str) -> bool:
            return (package_dir / name).is_file()

    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"invalid manifest {source}: not valid YAML: {exc}",
            next_command=f"fix {source} and commit the fix, then rerun the release",
        ) from None
    r = _Reader(source, data)
    image_name = r.get("image.name", str)
    if isinstance(r.get("image.tag", object), float):
        # YAML reads `tag: 1.10` as the number 1.1: the tag must be quoted.
        raise r.error("image.tag", 'is a number; quote it (tag: "1.10"), YAML would change it')
    image_tag = r.get("image.tag", (str, int))
    if not image_name.strip():
        raise r.error("image.name", "must not be empty")
    health = _health(r)
    containers = r.str_list("containers") or (service,)
    compose_name = r.get("compose_file", str, None)
    if compose_name is not None:
        if Path(compose_name).is_absolute() or ".." in Path(compose_name).parts:
            raise r.error(
                "compose_file", f"must be a path inside the package directory, got {compose_name!r}"
            )
        compose_file = package_dir / compose_name
        if not exists(compose_name):
            raise r.error("compose_file", f"names {compose_name}, which does not exist")
    else:
        found = [package_dir / n for n in COMPOSE_NAMES if exists(n)]
        if not found:
            raise r.error(
                "compose_file",
                f"is not set and {package_dir} has none of {', '.join(COMPOSE_NAMES)}",
            )
        compose_file = found[0]
    return Manifest(
        service=service,
        package_dir=package_dir,
        image=Image(image_name, str(image_tag)),
        health=health,
        containers=containers,
        compose_file=compose_file,
        backup=_backup(r),
        e2e_enabled=r.get("e2e.enabled", bool, False),
        source=source,
    )


def _health(r: _Reader) -> Health:
    endpoint = r.get("health.endpoint", str, None)
    if endpoint is not None and not endpoint.startswith(("http://", "https://")):
        raise r.error("health.endpoint", f"must be an http(s) URL, got {endpoint!r}")
    expected = r.get("health.expected_code", int, 200)
    if not 100 <= expected <= 599:
        raise r.error("health.expected_code", f"must be an HTTP status, got {expected}")
    tcp = r.get("health.tcp", str, None)
    if tcp is not None:
        host, _, port = tcp.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise r.error("health.tcp", f"must be host:port, got {tcp!r}")
    timeout = r.get("health.timeout", (int, float), 120)
    if timeout <= 0:
        raise r.error("health.timeout", f"must be positive, got {timeout}")
    health = Health(
        endpoint=endpoint,
        expected_code=expected,
        tcp=tcp,
        docker=r.get("health.docker", bool, False),
        command=r.str_list("health.command"),
        timeout=float(timeout),
    )
    if not health.kinds:
        raise r.error(
            "health",
            "must declare at least one of endpoint, tcp, docker: true or command",
        )
    return health


def _backup(r: _Reader) -> Backup:
    dump = None
    if r.get("backup.dump", dict, None) is not None:
        command, restore = r.str_list("backup.dump.command"), r.str_list("backup.dump.restore")
        for key, argv in (("command", command), ("restore", restore)):
            if not argv:
                raise r.error(f"backup.dump.{key}", "is required: an argv list")
        dump = Dump(command=command, restore=restore)
    when = r.get("backup.when", str, "prepare")
    if when not in BACKUP_WHEN:
        raise r.error("backup.when", f"must be one of {', '.join(BACKUP_WHEN)}, got {when!r}")
    if when == "stopped" and dump is not None:
        raise r.error(
            "backup.when",
            "stopped cannot go with backup.dump: a dump is taken from the running service",
        )
    return Backup(
        volumes=r.str_list("backup.volumes"),
        paths=r.str_list("backup.paths"),
        dump=dump,
        when=when,
    )


def load(repo: Path, service: str) -> Manifest:
    """Load `packages/<service>/manifest.yaml` from the deploy repo's worktree."""
    package_dir = repo / "packages" / service
    path = package_dir / "manifest.yaml"
    source = f"packages/{service}/manifest.yaml"
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read manifest {source}: {exc.strerror}") from None
    found = parse(text, service=service, package_dir=package_dir, source=source)
    target = found.compose_file.resolve()
    if not target.is_relative_to(package_dir.resolve()):
        raise ConfigError(
            f"invalid manifest {source}: compose_file {found.compose_file.name} is a link to "
            f"{target}, outside packages/{service}/",
            next_command=f"put the compose file itself in packages/{service}/, commit and "
            "merge it, then rerun the release",
        )
    return found
