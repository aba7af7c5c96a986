"""Docker Compose: which binary to drive, and the commands the release runs with it.

Commands are built as data by small pure functions (``up``, ``stop``, ``logs`` ...)
so they can be shown and unit-tested without a host; ``recreate``,
``container_logs`` and ``missing_images`` run them through a ``Runner``.

Compose is chosen by what it says it is, not by its name. Only Compose v2 is
driven: v1 ignores flags it does not know and still exits 0, so a v2 flag passed
to it would be silently dropped. A candidate must also pass on a failing exit
code; a wrapper that swallows them would make every failure look like success.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import yaml
from docker.models.containers import Container

from release_phases.errors import ConfigError, ReleaseError
from release_phases.shell import DEFAULT, Argv, CommandFailed, Result, Runner, render

OVERRIDE_ENV = "RELEASE_PHASES_COMPOSE"
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
NUMBER_LABEL = "com.docker.compose.container-number"
LOG_TAIL = 200
DETECT_TIMEOUT = 30.0
INSTALL_HINT = (
    "install Compose v2, the docker compose plugin (for example "
    "`apt-get install docker-compose-plugin`), check it with `docker compose version`, "
    f"or set {OVERRIDE_ENV} to a Compose v2 command"
)
# Passed to `version`; any real Compose v2 rejects it with a non-zero exit code.
_PROBE_FLAG = "--release-phases-exit-code-probe"


@dataclass(frozen=True)
class Compose:
    """A Compose v2 command prefix, e.g. ``("/usr/bin/docker", "compose")``."""

    prefix: tuple[str, ...]
    version: str

    def __str__(self) -> str:
        return f"{render(self.prefix)} (Compose {self.version})"


# -- detection ---------------------------------------------------------------------------


def parse_version(text: str) -> tuple[int, ...] | None:
    """The first ``X.Y[.Z]`` in a ``version`` output, e.g. ``v2.40.3`` -> (2, 40, 3)."""
    match = re.search(r"\bv?(\d+)\.(\d+)(?:\.(\d+))?", text)
    if match is None:
        return None
    return tuple(int(part) for part in match.groups() if part is not None)


def version_argv(prefix: Argv, *, short: bool = True) -> list[str]:
    return [*prefix, "version", *(["--short"] if short else [])]


def exit_code_probe(prefix: Argv) -> list[str]:
    """A command that must fail; one that 'succeeds' means exit codes are lost."""
    return [*prefix, "version", _PROBE_FLAG]


def is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"\x7fELF"
    except OSError:
        return False


def _on_path(name: str, path: str) -> list[str]:
    """Every executable called ``name`` on ``path``, first occurrence of each real file."""
    found: dict[str, str] = {}
    for directory in path.split(os.pathsep):
        candidate = os.path.join(directory or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            found.setdefault(os.path.realpath(candidate), candidate)
    return list(found.values())


def candidates(env: Mapping[str, str]) -> list[tuple[str, ...]]:
    """Prefixes to try, best first: the override alone, else the plugin then binaries.

    Standalone ``docker-compose`` files that are real (ELF) binaries come before
    scripts, which are often wrappers.
    """
    path = env.get("PATH", os.defpath)
    override = env.get(OVERRIDE_ENV, "").strip()
    if override:
        try:
            argv = shlex.split(override)
        except ValueError as exc:
            raise ConfigError(
                f"{OVERRIDE_ENV}={override!r} is not a command: {exc}",
                next_command=f"quote {OVERRIDE_ENV} as a shell would, or unset it",
            ) from None
        argv[0] = shutil.which(argv[0], path=path) or argv[0]
        return [tuple(argv)]
    found: list[tuple[str, ...]] = []
    docker_cli = shutil.which("docker", path=path)
    if docker_cli:
        found.append((docker_cli, "compose"))
    standalone = _on_path("docker-compose", path)
    standalone.sort(key=lambda p: not is_elf(p))  # stable: PATH order within each kind
    found.extend((p,) for p in standalone)
    return found


def _examine(runner: Runner, prefix: tuple[str, ...]) -> tuple[Compose | None, str]:
    """A usable Compose, or None and why this candidate was passed over."""
    shown = render(prefix)
    version: tuple[int, ...] | None = None
    for short in (True, False):
        try:
            result = runner.run(
                version_argv(prefix, short=short), check=False, timeout=DETECT_TIMEOUT
            )
        except OSError as exc:
            return None, f"{shown}: cannot run ({exc.strerror})"
        if result.ok:
            version = parse_version(result.output)
            if version is not None:
                break
    if version is None:
        return None, f"{shown}: not Compose (no version reported)"
    text = ".".join(map(str, version))
    if version[0] < 2:
        return None, (
            f"{shown} is Compose v1 {text}, which ignores flags it does not know and still "
            "exits 0, so it is never driven"
        )
    if runner.run(exit_code_probe(prefix), check=False, timeout=DETECT_TIMEOUT).ok:
        return None, f"{shown} reports Compose {text} but loses exit codes (a wrapper?)"
    return Compose(prefix=prefix, version=text), ""


_detected: dict[tuple[str, str], Compose] = {}


def detect(runner: Runner | None = None, env: Mapping[str, str] | None = None) -> Compose:
    """The Compose v2 to drive; found once per process (per override and PATH).

    Raises ReleaseError naming what was found and what to install when no
    candidate is Compose v2 with working exit codes.
    """
    env = os.environ if env is None else env
    key = (env.get(OVERRIDE_ENV, ""), env.get("PATH", ""))
    if key in _detected:
        return _detected[key]
    runner = runner or DEFAULT
    found = candidates(env)
    reasons: list[str] = []
    for prefix in found:
        compose, why = _examine(runner, prefix)
        if compose is not None:
            _detected[key] = compose
            return compose
        reasons.append(why)
    if env.get(OVERRIDE_ENV, "").strip():
        where = f"{OVERRIDE_ENV}={env[OVERRIDE_ENV]!r} is not usable"
    else:
        where = "no usable Docker Compose v2 found"
    detail = "; ".join(reasons) or "neither `docker compose` nor `docker-compose` is on PATH"
    raise ReleaseError(
        f"{where}: {detail}",
        untouched="everything: nothing was changed",
        next_command=INSTALL_HINT,
    )


# -- the project ---------------------------------------------------------------------------


def normalize_project_name(name: str) -> str:
    """What Compose makes of a name: lowercase, only [a-z0-9_-], no leading _ or -."""
    kept = "".join(re.findall(r"[a-z0-9_-]", name.lower()))
    return kept.lstrip("_-")


def project_name(compose_file: Path, text: str | None = None) -> str:
    """The compose file's ``name:``, else its directory's name, normalised.

    ``text`` is the file's content when it comes from elsewhere than the worktree
    (a commit's version of it); the name of its directory still counts.
    """
    try:
        data = yaml.safe_load(compose_file.read_text() if text is None else text)
    except OSError as exc:
        raise ConfigError(f"cannot read {compose_file}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{compose_file} is not valid YAML: {exc}") from None
    declared = data.get("name") if isinstance(data, dict) else None
    if declared is not None and not isinstance(declared, str):
        raise ConfigError(f"{compose_file}: name must be a string, got {declared!r}")
    if declared and "$" in declared:
        raise ConfigError(
            f"{compose_file}: name {declared!r} uses interpolation, which the release "
            "cannot resolve the way Compose would",
            next_command=f"write a literal name: in {compose_file}",
        )
    source = declared or compose_file.absolute().parent.name
    name = normalize_project_name(source)
    if not name:
        raise ConfigError(
            f"{compose_file}: no Compose project name can be made from {source!r}",
            next_command=f"set a top-level name: in {compose_file}",
        )
    return name


# -- commands as data ------------------------------------------------------------------------


def _project(compose: Compose, project: str, compose_file: Path) -> list[str]:
    return [*compose.prefix, "-p", project, "-f", str(compose_file)]


def up(
    compose: Compose,
    project: str,
    compose_file: Path,
    containers: Sequence[str],
    stop_timeout: int,
    *,
    start: bool = True,
) -> list[str]:
    """Recreate exactly ``containers`` (not their dependencies), detached; with
    ``start=False`` they are created but not started (revert restores data first)."""
    return [
        *_project(compose, project, compose_file),
        "up",
        "-d" if start else "--no-start",
        *("--no-deps", "--force-recreate", "--timeout", str(stop_timeout)),
        *containers,
    ]


def pull(
    compose: Compose, project: str, compose_file: Path, containers: Sequence[str]
) -> list[str]:
    """Fetch the images ``containers`` need from their registry."""
    return [*_project(compose, project, compose_file), "pull", *containers]


def stop(
    compose: Compose,
    project: str,
    compose_file: Path,
    containers: Sequence[str],
    stop_timeout: int,
) -> list[str]:
    return [
        *_project(compose, project, compose_file),
        *("stop", "--timeout", str(stop_timeout)),
        *containers,
    ]


def start(
    compose: Compose, project: str, compose_file: Path, containers: Sequence[str]
) -> list[str]:
    return [*_project(compose, project, compose_file), "start", *containers]


def logs(
    compose: Compose,
    project: str,
    compose_file: Path,
    containers: Sequence[str],
    tail: int = LOG_TAIL,
) -> list[str]:
    """The last ``tail`` lines of each container (Compose's --tail counts per container)."""
    return [
        *_project(compose, project, compose_file),
        *("logs", "--no-color", "--tail", str(tail)),
        *containers,
    ]


def config_images(
    compose: Compose, project: str, compose_file: Path, containers: Sequence[str] = ()
) -> list[str]:
    """The resolved model of ``containers`` as JSON: each service's image and build.

    JSON rather than ``config --images``: the latter also prints a made-up name
    for services that Compose builds, which are never missing in that sense.
    """
    return [
        *_project(compose, project, compose_file),
        *("config", "--format", "json"),
        *containers,
    ]


# -- running them ---------------------------------------------------------------------------


def recreate(
    runner: Runner,
    compose: Compose,
    project: str,
    compose_file: Path,
    containers: Sequence[str],
    stop_timeout: int,
    *,
    timeout: float | None = None,
    stream: bool = False,
) -> Result:
    """Run ``up``; on failure raise CommandFailed naming the logs command to read."""
    try:
        return runner.run(
            up(compose, project, compose_file, containers, stop_timeout),
            timeout=timeout,
            stream=stream,
        )
    except CommandFailed as exc:
        raise CommandFailed(
            exc.result,
            next_command=render(logs(compose, project, compose_file, containers)),
        ) from None


def container_logs(
    runner: Runner,
    compose: Compose,
    project: str,
    compose_file: Path,
    containers: Sequence[str],
    tail: int = LOG_TAIL,
) -> str:
    """The last ``tail`` log lines of each container; best effort, never raises on exit."""
    result = runner.run(
        logs(compose, project, compose_file, containers, tail), check=False, timeout=60
    )
    return result.output


def json_document(output: str) -> dict:
    """The JSON object in ``output``, skipping warnings Compose prints before it.

    The Runner merges stderr into stdout, so ``WARN[0000] ...`` lines may lead.
    """
    decoder = json.JSONDecoder()
    offset = 0
    for line in output.splitlines(keepends=True):
        if line.lstrip().startswith("{"):
            try:
                value, _ = decoder.raw_decode(output, offset + line.index("{"))
            except json.JSONDecodeError:
                pass
            else:
                if isinstance(value, dict):
                    return value
        offset += len(line)
    raise ValueError("no JSON object in the output")


def images_in_config(config: dict, containers: Sequence[str] = ()) -> list[str]:
    """Images the named services (all when none named) run and Compose would not build."""
    services = config.get("services") or {}
    wanted = list(containers) or list(services)
    unknown = [name for name in wanted if name not in services]
    if unknown:
        raise ValueError(f"no such service: {', '.join(unknown)}")
    images: list[str] = []
    for name in wanted:
        service = services[name] or {}
        image = service.get("image")
        if image and "build" not in service and image not in images:
            images.append(image)
    return images


def missing_images(
    client: docker.DockerClient,
    compose: Compose,
    project: str,
    compose_file: Path,
    containers: Sequence[str],
    *,
    runner: Runner | None = None,
) -> list[str]:
    """Images ``containers`` need that are not in the local engine (no registry asked)."""
    runner = runner or DEFAULT
    argv = config_images(compose, project, compose_file, containers)
    result = runner.run(argv, check=False, timeout=60)
    if not result.ok:
        raise CommandFailed(
            result,
            untouched="every container: the compose file could not be read",
            next_command=render(argv),
        )
    try:
        images = images_in_config(json_document(result.output), containers)
    except ValueError as exc:
        raise ReleaseError(
            f"cannot read the images of {', '.join(containers)} from `{render(argv)}`: {exc}",
            untouched="every container",
            next_command=render(argv),
        ) from None
    missing = []
    for image in images:
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            missing.append(image)
    return missing


def containers(client: docker.DockerClient, project: str, service: str) -> list[Container]:
    """The service's containers, stopped ones too, by Compose's labels, in number order."""
    found = client.containers.list(
        all=True,
        filters={"label": [f"{PROJECT_LABEL}={project}", f"{SERVICE_LABEL}={service}"]},
    )
    return sorted(found, key=lambda c: int(c.labels.get(NUMBER_LABEL, "0") or 0))
