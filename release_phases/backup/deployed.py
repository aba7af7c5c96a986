"""What runs now: the service's containers and volumes, as the Docker Engine sees them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from docker.models.containers import Container
from docker.models.volumes import Volume
from docker.types import Mount

from release_phases.backup.record import Entry
from release_phases.errors import ReleaseError
from release_phases.host import Host
from release_phases.host.compose import ComposeProject
from release_phases.host.engine import HELPER_LABEL, HELPER_REPO_LABEL, Engine, project_volume
from release_phases.host.shell import render
from release_phases.manifest import Manifest

# Where a throwaway container mounts the volume; also the archive's top-level name.
VOLUME_MOUNT = "/release-phases-volume"
# A throwaway container is never started (so nothing in its image need exist); this
# entrypoint only satisfies "a container needs a command" for images that declare none.
NEVER_STARTED = ["release-phases-helper-is-never-started"]


class Deployed:
    """The service as the Docker Engine sees it now, found by compose labels; commands in
    its containers run through ``host``."""

    def __init__(self, host: Host, manifest: Manifest, project: ComposeProject) -> None:
        self.host = host
        self.manifest = manifest
        self.project = project

    @property
    def engine(self) -> Engine:
        return self.host.engine

    @property
    def service(self) -> str:
        return self.manifest.service

    @property
    def source(self) -> str:
        """The manifest, as an operator's next command names it."""
        return self.manifest.source or "the manifest"

    def compose(self, *args: str) -> str:
        """An operator's compose command for this project."""
        return render(self.project.argv(*args))

    def containers(self) -> list[Container]:
        """Its containers, stopped ones too; a swarm service's: those of its tasks on this
        node, found by Swarm's labels (the exited ones of replaced tasks included)."""
        if self.manifest.swarm:
            return [c for key in self.manifest.containers for c in self._task_containers(key)]
        return self.engine.containers_of_all(self.project.name, self.manifest.containers)

    def first_container(self) -> Container | None:
        if self.manifest.swarm:
            mine = self._task_containers(self.manifest.containers[0])
            # A running one first: its image is the one the service runs now.
            mine.sort(key=lambda c: c.status != "running")
        else:
            mine = self.engine.containers_of(self.project.name, self.manifest.containers[0])
        return mine[0] if mine else None

    def _task_containers(self, key: str) -> list[Container]:
        return self.host.swarm.containers(self.project.name, f"{self.project.name}_{key}")

    def resolve(self, key: str) -> Volume | None:
        """Compose names a volume `<project>_<key>`, or `<key>` when it is external."""
        volume = self.engine.volume(project_volume(self.project.name, key))
        return volume or self.engine.volume(key)

    def current_volume(self, entry: Entry) -> Volume | None:
        """The volume an entry restores into: the recorded one, else resolve the key again."""
        return self.engine.volume(entry.target) or (
            self.resolve(entry.name) if entry.absent else None
        )

    def helper_image(self) -> str | None:
        """An image that is surely local: the current container's, else the manifest's."""
        current = self.first_container()
        if current is not None:
            return str(current.attrs["Image"])
        return self.engine.image_id(self.manifest.image.ref)

    def refuse_mounts(self, container: Container, path: str) -> None:
        """Refuse a path that is or holds a mount point: replacing it would reach into it."""
        for mount in container.attrs.get("Mounts") or []:
            dest = mount.get("Destination", "")
            if dest == path or dest.startswith(path + "/"):
                raise ReleaseError(
                    f"backup of {self.service}: path {path} in {container.name} is or holds"
                    f" the mount point {dest}; restoring it would reach into the mount",
                    untouched=f"everything: no backup was written for {self.service}",
                    next_command=(
                        f"in {self.source}, declare the volume"
                        f" under backup.volumes and list only paths without mounts"
                    ),
                )


@contextmanager
def helper(deployed: Deployed, image: str, volume: str, *, read_only: bool) -> Iterator[Container]:
    """A created, never started container with the volume at VOLUME_MOUNT."""
    container = deployed.engine.client.containers.create(
        image,
        entrypoint=NEVER_STARTED,
        # The repository: a run that takes over from a killed one removes what it left.
        labels={HELPER_LABEL: "1", HELPER_REPO_LABEL: str(deployed.host.repo)},
        network_mode="none",
        mounts=[Mount(VOLUME_MOUNT, volume, type="volume", read_only=read_only, no_copy=True)],
    )
    try:
        yield container
    finally:
        container.remove(force=True)
