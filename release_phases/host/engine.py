"""The Docker Engine, asked through the Docker SDK: the one place that queries it.

Compose's labels are defined here once; every question the release asks of the
engine (the containers of a service, an image's id, a volume and who holds it)
is a method of `Engine`. The SDK client is made on first use, so building an
`Engine` costs nothing and a run that never asks never connects.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from release_phases.errors import ReleaseError

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container
    from docker.models.volumes import Volume

P = ParamSpec("P")
T = TypeVar("T")

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
NUMBER_LABEL = "com.docker.compose.container-number"
#: "True" on a `compose run` container, which `compose stop` leaves running.
ONEOFF_LABEL = "com.docker.compose.oneoff"
VOLUME_LABEL = "com.docker.compose.volume"
WORKING_DIR_LABEL = "com.docker.compose.project.working_dir"
#: The engine's own throwaway containers (a volume mounted to archive it).
HELPER_LABEL = "io.release-phases.helper"
#: The deploy repository whose run made a throwaway container: the lock is the
#: repository's, so once a run holds it, every helper labelled so is a dead run's.
HELPER_REPO_LABEL = "io.release-phases.repo"


def engine_failed(exc: BaseException) -> bool:
    """Is `exc` the Docker Engine failing to answer or refusing (the SDK's errors and
    its HTTP client's)? A missing object (NotFound) is an answer, not a failure. The
    one test of it: each caller words the failure for what it was doing."""
    import docker.errors
    import requests

    return isinstance(
        exc, docker.errors.DockerException | requests.exceptions.RequestException
    ) and not isinstance(exc, docker.errors.NotFound)


def answering(query: Callable[P, T]) -> Callable[P, T]:
    """The SDK's errors as an operator's: "the engine did not answer", not a traceback.

    A missing object (NotFound) is an answer, and goes through as it is.
    """

    @functools.wraps(query)
    def asked(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return query(*args, **kwargs)
        except Exception as exc:
            if not engine_failed(exc):
                raise
            raise ReleaseError(
                f"the Docker Engine did not answer ({query.__name__}): {exc}",
                untouched="what this step had not reached yet",
                next_command="check the engine (`docker info`; `systemctl status docker`), "
                "then run the same command again",
            ) from None

    return asked


def container_number(container: Container) -> int:
    return int(container.labels.get(NUMBER_LABEL, "0") or 0)


@dataclass(frozen=True)
class ContainerState:
    name: str
    #: created, running, restarting, exited, dead ...
    status: str
    exit_code: int
    restarts: int
    #: Docker's HEALTHCHECK status (starting, healthy, unhealthy), None without one.
    health: str | None


class Engine:
    """Queries of the Docker Engine, through one lazily made SDK client."""

    @cached_property
    def client(self) -> docker.DockerClient:
        import docker  # the SDK loads only when the engine is first asked

        return docker.from_env()

    @answering
    def version(self) -> str:
        info: dict[str, Any] = self.client.version()
        return str(info.get("Version", "?"))

    # -- containers ---------------------------------------------------------------------
    @answering
    def containers_of(self, project: str, service: str) -> list[Container]:
        """A compose service's containers, stopped ones too, in container-number order."""
        found = self.client.containers.list(
            all=True,
            filters={"label": [f"{PROJECT_LABEL}={project}", f"{SERVICE_LABEL}={service}"]},
        )
        return sorted(found, key=lambda c: (container_number(c), c.name))

    def containers_of_all(self, project: str, services: tuple[str, ...]) -> list[Container]:
        """The containers of several services of one project, service by service."""
        return [c for service in services for c in self.containers_of(project, service)]

    @answering
    def containers_made_in(self, working_dir: str) -> list[Container]:
        """Containers compose made from files in `working_dir`, whatever their project."""
        return self.client.containers.list(
            all=True, filters={"label": f"{WORKING_DIR_LABEL}={working_dir}"}
        )

    @answering
    def volume_users(self, volume: str) -> list[Container]:
        """Containers that mount the volume, other than the engine's own throwaway ones."""
        found = self.client.containers.list(all=True, filters={"volume": volume})
        return [c for c in found if HELPER_LABEL not in c.labels]

    @answering
    def stale_helpers(self, volume: str) -> list[Container]:
        """Throwaway containers a killed run left holding the volume."""
        return self.client.containers.list(
            all=True, filters={"volume": volume, "label": f"{HELPER_LABEL}=1"}
        )

    @answering
    def helpers_of(self, repo: str) -> list[Container]:
        """Throwaway containers made by runs in deploy repository ``repo``."""
        return self.client.containers.list(
            all=True, filters={"label": [f"{HELPER_LABEL}=1", f"{HELPER_REPO_LABEL}={repo}"]}
        )

    @answering
    def remove(self, container: Container) -> None:
        """Remove a container we made (running or not); one already gone is no error."""
        import docker.errors

        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)

    @answering
    def state(self, container: str) -> ContainerState:
        """A container's state now (read afresh), by name or id."""
        attrs: dict[str, Any] = self.client.containers.get(container).attrs
        state = attrs.get("State") or {}
        return ContainerState(
            name=str(attrs.get("Name", container)).lstrip("/"),
            status=str(state.get("Status", "?")),
            exit_code=int(state.get("ExitCode") or 0),
            restarts=int(attrs.get("RestartCount") or 0),
            health=(state.get("Health") or {}).get("Status"),
        )

    @answering
    def inspect(self, container: str) -> dict[str, Any]:
        """A container as `docker inspect` shows it (read afresh), by name or id."""
        attrs: dict[str, Any] = self.client.containers.get(container).attrs
        return attrs

    # -- images and volumes -------------------------------------------------------------
    @answering
    def image_id(self, ref: str) -> str | None:
        """The id `ref` resolves to on this host now, or None when it is not here."""
        import docker.errors

        try:
            return str(self.client.images.get(ref).id)
        except docker.errors.ImageNotFound:
            return None

    @answering
    def volume(self, name: str) -> Volume | None:
        import docker.errors

        try:
            return self.client.volumes.get(name)
        except docker.errors.NotFound:
            return None


def tag_argv(image: str, ref: str) -> list[str]:
    """Point tag `ref` at `image` (an id), whatever it pointed at before."""
    return ["docker", "tag", image, ref]


def project_volume(project: str, key: str) -> str:
    """The name compose gives volume `key` of `project`."""
    return f"{project}_{key}"


def volume_create_argv(project: str, key: str) -> list[str]:
    """Create a volume as compose would, labelled so that compose adopts it."""
    return [
        "docker",
        "volume",
        "create",
        f"--label={PROJECT_LABEL}={project}",
        f"--label={VOLUME_LABEL}={key}",
        project_volume(project, key),
    ]


def readable_directory(volume: dict[str, Any], docker_host: str | None) -> Path | None:
    """The host directory holding a volume's files, when this process can read them there.

    Only a plain `local` volume (no driver options: a tmpfs, NFS or bind volume is
    mounted only while a container uses it) of an engine on this machine (DOCKER_HOST
    unset or a unix socket), whose mountpoint this process can enter. Otherwise None,
    and the volume is read through a container and the Docker API.
    """
    if docker_host and not docker_host.startswith("unix://"):
        return None
    if volume.get("Driver") != "local" or volume.get("Options"):
        return None
    mountpoint = volume.get("Mountpoint")
    if not mountpoint:
        return None
    path = Path(mountpoint)
    # Docker's own layout (`.../volumes/<name>/_data`); a name tar's --transform can
    # take as it is.
    if not re.fullmatch(r"\w+", path.name):
        return None
    if not path.is_dir() or not os.access(path, os.R_OK | os.X_OK):
        return None
    return path


def archive_argv(directory: Path, top: str) -> list[str]:
    """GNU tar of ``directory`` to stdout, its members under ``top/`` (as the Docker API's
    archive of the same directory mounted at ``/top`` names them), owners by number.

    ``S``: a symbolic link's target is left as it is; only member names are renamed.
    """
    return [
        "tar",
        "--create",
        "--file=-",
        "--numeric-owner",
        # Docker walks a directory in name order; so does this archive, so the two list
        # the same members in the same order (and pick the same one of hard links).
        "--sort=name",
        f"--directory={directory.parent}",
        f"--transform=s,^{directory.name},{top},S",
        directory.name,
    ]


def writable_directory(volume: dict[str, Any], docker_host: str | None) -> Path | None:
    """The host directory of a volume this process can fill as the Docker API would: a
    `readable_directory` it may write, as root (only root gives files their owners)."""
    path = readable_directory(volume, docker_host)
    if path is None or os.geteuid() != 0 or not os.access(path, os.W_OK):
        return None
    return path


def extract_argv(directory: Path) -> list[str]:
    """GNU tar reading an archive of `archive_argv`'s form (or the API's) on stdin into
    ``directory``: the members below the archive's top directory land in it, with their
    owners by number, modes and extended attributes as archived. The top directory's
    own member is dropped with its name component; the caller gives ``directory`` its
    owner, mode and time.

    Run as root on the host, so only on an archive whose checksum was verified, into
    a volume just created empty. GNU tar refuses members with ``..`` and strips a
    leading ``/`` by default, and holds back a symbolic link pointing out of the
    directory until nothing else is left to extract, so no member lands outside it.
    """
    return [
        "tar",
        "--extract",
        "--file=-",
        "--numeric-owner",
        "--same-owner",
        "--same-permissions",
        "--xattrs",
        "--xattrs-include=*",
        "--strip-components=1",
        f"--directory={directory}",
    ]


def sync_argv(directory: Path) -> list[str]:
    """Flush the filesystem holding ``directory`` to disk (syncfs(2))."""
    return ["sync", "--file-system", str(directory)]
