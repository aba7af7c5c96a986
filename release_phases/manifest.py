"""`packages/<service>/manifest.yaml`: what a deployable service declares.

The loader distrusts what it reads: every key is checked for presence and type
(by a strict pydantic model, see schema.py), a key it does not know is refused with
the nearest known one suggested, and an error names the file and the dotted key, so
nothing runs on a half-valid manifest.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from release_phases.errors import ConfigError
from release_phases.schema import NonEmptyStr, Strict, problems, summary

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
    #: Services that, when in the same release, are migrated and healthy before this one.
    after: tuple[str, ...] = ()
    #: Read as deployed (`parse(deployed=True)`): the unknown keys left out, each as
    #: `key is not a known key; did you mean ...?`.
    ignored: tuple[str, ...] = ()
    #: `compose`: containers recreated by `docker compose up`; `swarm`: a Docker Swarm
    #: stack named after the service, updated by `docker stack deploy`.
    engine: str = "compose"

    @property
    def swarm(self) -> bool:
        return self.engine == "swarm"


def load_yaml(text: str, *, unique_keys: bool = False) -> Any:
    """`yaml.safe_load`; a document nested too deep for its recursive parser is a YAML
    error like any other, not a RecursionError that ends the run with a traceback.

    With ``unique_keys``, a key given twice in one mapping is an error too.
    """
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader if unique_keys else yaml.SafeLoader)
    except RecursionError:
        raise yaml.YAMLError("it is nested too deeply to be read") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys: a second `backup:` or `health:` block
    would silently replace the first. This loader refuses it instead."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[tuple[str, str], yaml.Mark] = {}
        for key_node, _ in node.value:
            # `<<` merges are YAML's own way to override keys; only keys written here count.
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            key = (key_node.tag, key_node.value)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    f"the key {key_node.value!r} is given twice in one mapping: first",
                    seen[key],
                    "and again",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


# -- the document, as pydantic checks it ------------------------------------------------
# Private: the YAML's shape. `parse` turns a checked document into the frozen
# dataclasses above, which is what the rest of the engine reads.


class _Doc(Strict):
    @field_validator("*", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        # pydantic would take `dump:` with nothing under it as "no dump" for an optional
        # key; a key written without a value is a mistake to name, never a backup skipped.
        if value is None:
            raise PydanticCustomError("null", "has no value: give it one, or leave the key out")
        return value


class _ImageDoc(_Doc):
    name: NonEmptyStr
    tag: NonEmptyStr

    @field_validator("name")
    @classmethod
    def _named(cls, name: str) -> str:
        if not name.strip():
            raise PydanticCustomError("blank", "must not be empty")
        return name

    @field_validator("tag", mode="before")
    @classmethod
    def _tag_text(cls, tag: Any) -> Any:
        if isinstance(tag, float):
            # YAML reads `tag: 1.10` as the number 1.1: the tag must be quoted.
            raise PydanticCustomError(
                "tag_number", 'is a number; quote it (tag: "1.10"), YAML would change it'
            )
        if isinstance(tag, bool):
            # bool is an int to Python: `tag: yes` must not become the tag "True".
            raise _problem("must be text or a whole number, got {value}", tag)
        # `tag: 2` is the tag "2".
        return str(tag) if isinstance(tag, int) else tag


class _HealthDoc(_Doc):
    endpoint: str | None = None
    expected_code: int = 200
    tcp: str | None = None
    docker: bool = False
    command: list[NonEmptyStr] = Field(default_factory=list)
    timeout: float = Field(120.0, allow_inf_nan=False)

    @field_validator("endpoint")
    @classmethod
    def _url(cls, endpoint: str) -> str:
        if not endpoint.startswith(("http://", "https://")):
            raise _problem("must be an http(s) URL, got {value}", endpoint)
        return endpoint

    @field_validator("expected_code")
    @classmethod
    def _status(cls, code: int) -> int:
        if not 100 <= code <= 599:
            raise _problem("must be an HTTP status, got {value}", code)
        return code

    @field_validator("tcp")
    @classmethod
    def _address(cls, tcp: str) -> str:
        host, _, port = tcp.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise _problem("must be host:port, got {value}", tcp)
        return tcp

    @field_validator("timeout")
    @classmethod
    def _positive(cls, timeout: float) -> float:
        if timeout <= 0:
            raise _problem("must be positive, got {value}", timeout)
        return timeout

    @model_validator(mode="after")
    def _some_kind(self) -> _HealthDoc:
        if not (self.endpoint is not None or self.tcp is not None or self.docker or self.command):
            raise PydanticCustomError(
                "no_health", "must declare at least one of endpoint, tcp, docker: true or command"
            )
        return self


class _DumpDoc(_Doc):
    command: list[NonEmptyStr] = Field(min_length=1)
    restore: list[NonEmptyStr] = Field(min_length=1)


class _BackupDoc(_Doc):
    volumes: list[NonEmptyStr] = Field(default_factory=list)
    paths: list[NonEmptyStr] = Field(default_factory=list)
    dump: _DumpDoc | None = None
    when: str = "prepare"

    @field_validator("when")
    @classmethod
    def _when(cls, when: str, info: ValidationInfo) -> str:
        if when not in BACKUP_WHEN:
            raise _problem(f"must be one of {', '.join(BACKUP_WHEN)}, got {{value}}", when)
        # `dump` is declared before `when`, so it has been read (if it was valid).
        if when == "stopped" and info.data.get("dump") is not None:
            raise PydanticCustomError(
                "stopped_dump",
                "stopped cannot go with backup.dump: a dump is taken from the running service",
            )
        return when


class _E2eDoc(_Doc):
    enabled: bool = False


class _ManifestDoc(_Doc):
    image: _ImageDoc
    health: _HealthDoc
    containers: list[NonEmptyStr] = Field(default_factory=list)
    compose_file: str | None = None
    backup: _BackupDoc = _BackupDoc()
    e2e: _E2eDoc = _E2eDoc()
    after: list[NonEmptyStr] = Field(default_factory=list)
    engine: Literal["compose", "swarm"] = "compose"

    @field_validator("engine")
    @classmethod
    def _swarm_backup(cls, engine: str, info: ValidationInfo) -> str:
        # A swarm task has no "created, not started" state to restore a path into, and
        # no `compose exec` to dump through: only volumes are backed up for now.
        # `backup` is declared before `engine`, so it has been read (if it was valid).
        backup = info.data.get("backup")
        if engine == "swarm" and isinstance(backup, _BackupDoc):
            unsupported = [
                key
                for key, given in (
                    ("backup.paths", bool(backup.paths)),
                    ("backup.dump", backup.dump is not None),
                    ("backup.when: stopped", backup.when == "stopped"),
                )
                if given
            ]
            if unsupported:
                raise PydanticCustomError(
                    "swarm_backup",
                    "swarm backs up volumes only; {keys} cannot go with it (yet)",
                    {"keys": ", ".join(unsupported)},
                )
        return engine

    @field_validator("compose_file")
    @classmethod
    def _inside(cls, name: str) -> str:
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise _problem("must be a path inside the package directory, got {value}", name)
        return name


def _problem(template: str, value: object) -> PydanticCustomError:
    """A check's own wording, with the value it refused."""
    return PydanticCustomError("manifest", template, {"value": repr(value)})


def _invalid(source: str, key: str, problem: str) -> ConfigError:
    where = f"{source}: {key}" if key else source
    return _refused(f"{where} {problem}", source)


def _refused(detail: str, source: str) -> ConfigError:
    return ConfigError(
        f"invalid manifest {detail}",
        next_command=f"fix {source} and commit the fix, then rerun the release",
    )


def parse(
    text: str,
    *,
    service: str,
    package_dir: Path,
    source: str,
    exists: Callable[[str], bool] | None = None,
    deployed: bool = False,
) -> Manifest:
    """Validate manifest text; ``package_dir`` is where relative paths resolve.

    ``exists(name)`` says whether a file of the package exists; by default the
    worktree is asked, while the collection-time plan asks the incoming commit.

    ``deployed``: the manifest of a version that already ran (at BASE_SHA, or what a
    revert returns to). An older engine ignored unknown keys, and no commit can change
    what ran, so its unknown keys are left out and listed in `Manifest.ignored`
    instead of refused; any other mistake is refused as always.
    """
    if exists is None:

        def exists(name: str) -> bool:
            return (package_dir / name).is_file()

    try:
        # What already ran was read by an engine that let a repeated key through.
        data = load_yaml(text, unique_keys=not deployed)
    except yaml.YAMLError as exc:
        raise _refused(f"{source}: not valid YAML: {exc}", source) from None
    ignored: tuple[str, ...] = ()
    try:
        doc = _ManifestDoc.model_validate(data)
    except ValidationError as exc:
        mistakes = problems(exc, _ManifestDoc)
        lenient = _without_unknown_keys(data, exc) if deployed else None
        if lenient is None:
            # The one place a ValidationError becomes the operator's message.
            raise _refused(f"{source}: {summary(mistakes)}", source) from None
        doc = lenient
        ignored = tuple(f"{key} {problem}" for key, problem in mistakes)
    if doc.compose_file is not None:
        compose_file = package_dir / doc.compose_file
        if not exists(doc.compose_file):
            raise _invalid(
                source, "compose_file", f"names {doc.compose_file}, which does not exist"
            )
    else:
        found = [package_dir / n for n in COMPOSE_NAMES if exists(n)]
        if not found:
            raise _invalid(
                source,
                "compose_file",
                f"is not set and {package_dir} has none of {', '.join(COMPOSE_NAMES)}",
            )
        compose_file = found[0]
    health, backup = doc.health, doc.backup
    return Manifest(
        service=service,
        package_dir=package_dir,
        image=Image(doc.image.name, doc.image.tag),
        health=Health(
            endpoint=health.endpoint,
            expected_code=health.expected_code,
            tcp=health.tcp,
            docker=health.docker,
            command=tuple(health.command),
            timeout=health.timeout,
        ),
        containers=tuple(doc.containers) or (service,),
        compose_file=compose_file,
        backup=Backup(
            volumes=tuple(backup.volumes),
            paths=tuple(backup.paths),
            dump=None
            if backup.dump is None
            else Dump(command=tuple(backup.dump.command), restore=tuple(backup.dump.restore)),
            when=backup.when,
        ),
        e2e_enabled=doc.e2e.enabled,
        source=source,
        after=tuple(doc.after),
        ignored=ignored,
        engine=doc.engine,
    )


def _without_unknown_keys(data: Any, exc: ValidationError) -> _ManifestDoc | None:
    """The document valid once its unknown keys are left out, or None when unknown keys
    are not its only mistakes."""
    errors = exc.errors()
    if any(err["type"] != "extra_forbidden" for err in errors):
        return None
    trimmed = copy.deepcopy(data)
    for err in errors:
        *parents, name = err["loc"]
        node = trimmed
        for part in parents:
            node = node[part]
        node.pop(name, None)
    try:
        return _ManifestDoc.model_validate(trimmed)
    except ValidationError:
        return None


def decode(data: bytes, source: str) -> str:
    """A manifest's bytes as text; one that is not UTF-8 is refused, not half-read."""
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise _refused(f"{source}: byte {exc.start} is not UTF-8", source) from None


def load(repo: Path, service: str, *, deployed: bool = False) -> Manifest:
    """Load `packages/<service>/manifest.yaml` from the deploy repo's worktree
    (``deployed``: see `parse`)."""
    package_dir = repo / "packages" / service
    path = package_dir / "manifest.yaml"
    source = f"packages/{service}/manifest.yaml"
    try:
        text = decode(path.read_bytes(), source)
    except OSError as exc:
        raise ConfigError(f"cannot read manifest {source}: {exc.strerror}") from None
    found = parse(text, service=service, package_dir=package_dir, source=source, deployed=deployed)
    target = found.compose_file.resolve()
    if not target.is_relative_to(package_dir.resolve()):
        raise ConfigError(
            f"invalid manifest {source}: compose_file {found.compose_file.name} is a link to "
            f"{target}, outside packages/{service}/",
            next_command=f"put the compose file itself in packages/{service}/, commit and "
            "merge it, then rerun the release",
        )
    return found
