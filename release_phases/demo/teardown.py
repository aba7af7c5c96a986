"""What a rerun resets and `--clean` removes: only this demo's own things.

Containers, volumes and networks are found by the demo's label or by its exact
compose project names (the engine's throwaway backup containers by the prod
clone's path, the label the engine gives them); images by the demo's label; the
directory only when it holds the marker this demo wrote. Nothing is matched by a
name's prefix, so nothing of another demo or of anyone else is touched.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass, field

import docker
import docker.errors

from release_phases.demo.layout import MARKER, Layout, marker_owner
from release_phases.errors import ReleaseError
from release_phases.host.engine import HELPER_REPO_LABEL, PROJECT_LABEL


@dataclass
class Removed:
    containers: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    directory: str = ""

    def __str__(self) -> str:
        parts = [
            f"{len(items)} {what}{'s' if len(items) > 1 else ''}"
            for what, items in (
                ("container", self.containers),
                ("volume", self.volumes),
                ("network", self.networks),
                ("image", self.images),
            )
            if items
        ]
        if self.directory:
            parts.append(self.directory)
        return ", ".join(parts) or "nothing"


Filters = dict[str, str | list[str] | bool]


def _filters(layout: Layout) -> list[Filters]:
    """Docker list filters, each naming this demo's things exactly."""
    by_project: list[Filters] = [{"label": f"{PROJECT_LABEL}={p}"} for p in layout.projects]
    return [{"label": layout.label}, *by_project]


def remove_resources(client: docker.DockerClient, layout: Layout, removed: Removed) -> None:
    """Containers first (they hold the volumes and networks), then volumes and networks."""
    helpers: Filters = {"label": f"{HELPER_REPO_LABEL}={layout.prod.absolute()}"}
    for filters in [*_filters(layout), helpers]:
        for container in client.containers.list(all=True, filters=filters):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True, v=True)
                removed.containers.append(container.name or container.id or "")
    for filters in _filters(layout):
        for volume in client.volumes.list(filters=filters):
            with contextlib.suppress(docker.errors.NotFound):
                volume.remove(force=True)
                removed.volumes.append(volume.name or "")
        for network in client.networks.list(filters=filters):
            with contextlib.suppress(docker.errors.NotFound):
                network.remove()
                removed.networks.append(network.name or "")


def remove_images(client: docker.DockerClient, layout: Layout, removed: Removed) -> None:
    """By id: an image imported again left its earlier one untagged, labelled still."""
    for image in client.images.list(all=True, filters={"label": layout.label}):
        if image.id is None:
            continue
        with contextlib.suppress(docker.errors.NotFound):
            client.images.remove(image.id, force=True)
            removed.images.append(", ".join(image.tags) or image.short_id)


def check_directory(layout: Layout) -> bool:
    """Whether the directory is this demo's to empty: absent, empty, or marked by it.

    Raises ReleaseError for a directory that is not this demo's."""
    root = layout.root
    if not root.exists():
        return False
    if not root.is_dir():
        raise ReleaseError(
            f"{root} is not a directory",
            untouched=f"{root} and everything else",
            next_command="choose another place with --dir PATH",
        )
    if not any(root.iterdir()):
        return False
    try:
        owner = marker_owner(layout.marker.read_text())
    except OSError:
        owner = None
    if owner is None:
        raise ReleaseError(
            f"{root} holds files and no {MARKER} of the demo: it was not made by "
            "`release-phases demo`, so the demo will not empty it",
            untouched=f"{root} and everything else",
            next_command="choose an empty or new directory with --dir PATH",
        )
    if owner != layout.name:
        raise ReleaseError(
            f"{root} holds the demo named {owner!r}, not {layout.name!r}",
            untouched=f"{root} and everything else",
            next_command=f"release-phases demo --name {owner} --dir {root} --clean "
            "to remove it, or choose another --dir",
        )
    return True


def remove_directory(layout: Layout, removed: Removed) -> None:
    if check_directory(layout):
        shutil.rmtree(layout.root)
        removed.directory = str(layout.root)
