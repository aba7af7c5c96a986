"""Restoring a backup: refuse what could not finish, set aside what stands, put it back."""

from __future__ import annotations

import io
import posixpath
import tarfile
import time
from pathlib import Path

import docker.errors
from docker.models.containers import Container
from docker.types import Mount

from release_phases import clock
from release_phases.backup.compare import check_restored
from release_phases.backup.deployed import VOLUME_MOUNT, Deployed, helper
from release_phases.backup.record import (
    NOTHING_RESTORED,
    BackupRecord,
    Entry,
    RestoreReport,
    VolumeConfig,
    verify,
)
from release_phases.backup.take import Source, write_backup
from release_phases.errors import ReleaseError
from release_phases.host import Host
from release_phases.host.compose import ComposeProject
from release_phases.host.engine import HELPER_LABEL
from release_phases.manifest import Manifest

STOPPED_STATES = frozenset({"created", "exited", "dead"})


def restore(
    host: Host,
    manifest: Manifest,
    project: ComposeProject,
    root: Path,
    stamp: str,
) -> RestoreReport:
    """Put a verified backup back, after archiving what stood there; verify the result."""
    deployed = Deployed(host, manifest, project)
    record = verify(root, manifest.service, stamp)
    first = deployed.first_container()
    _preflight(deployed, record, first)
    replaced = _set_aside(deployed, record, first)
    undo = (
        f"what stood there is kept in {replaced.directory}; restore stamp"
        f" {replaced.stamp!r} to put it back"
    )
    actions = []
    for entry, before in zip(record.entries, replaced.entries, strict=True):
        try:
            if entry.kind == "volume":
                action = _restore_volume(deployed, record, entry, before, replaced)
            else:
                action = _restore_path(record, entry, first)
            check_restored(deployed, record, entry, first, undo)
        except docker.errors.APIError as exc:
            raise ReleaseError(
                f"restore of {manifest.service} {entry.label} from {stamp} failed: {exc}",
                untouched=undo,
                next_command=f"fix the cause, then rerun the revert; {deployed.compose('ps')}",
            ) from None
        actions.append(action)
    return RestoreReport(record=record, replaced=replaced, actions=tuple(actions))


def _preflight(deployed: Deployed, record: BackupRecord, first: Container | None) -> None:
    """Refuse, before touching anything, what the restore could not finish."""
    for entry in record.entries:
        if entry.kind == "volume":
            volume = deployed.current_volume(entry)
            running = [
                str(c.name)
                for c in (deployed.engine.volume_users(volume.name) if volume else [])
                if c.status not in STOPPED_STATES
            ]
            if running:
                raise ReleaseError(
                    f"cannot restore {deployed.service} {entry.label}: it is in use by"
                    f" running {', '.join(running)}",
                    untouched=NOTHING_RESTORED,
                    next_command=f"stop them first: {deployed.compose('stop')}",
                )
        elif not entry.absent:
            if first is None:
                raise ReleaseError(
                    f"cannot restore {deployed.service} {entry.label}: no container of"
                    f" {deployed.manifest.containers[0]} exists to restore it into",
                    untouched=NOTHING_RESTORED,
                    next_command=f"create it without starting it: {deployed.compose('create')}",
                )
            if first.status not in STOPPED_STATES:
                raise ReleaseError(
                    f"cannot restore {deployed.service} {entry.label}: {first.name} is"
                    f" {first.status}",
                    untouched=NOTHING_RESTORED,
                    next_command=f"stop it first: {deployed.compose('stop')}",
                )
            deployed.refuse_mounts(first, entry.target)
    if any(e.kind == "volume" for e in record.entries) and deployed.helper_image() is None:
        raise ReleaseError(
            f"cannot restore {deployed.service}: no local image to mount volumes in"
            f" (no container, and {deployed.manifest.image.ref} is not local)",
            untouched=NOTHING_RESTORED,
            next_command=f"docker pull {deployed.manifest.image.ref}, then rerun the revert",
        )


def _set_aside(deployed: Deployed, record: BackupRecord, first: Container | None) -> BackupRecord:
    """Archive what stands there now, as a backup of its own, so the restore can be undone."""
    while True:
        now = clock.stamp()
        directory = record.directory / f"replaced-{now}"
        if not directory.exists():
            break
        time.sleep(0.2)
    sources = []
    for entry in record.entries:
        if entry.kind == "volume":
            volume = deployed.current_volume(entry)
            target = volume.name if volume else entry.target
            sources.append(Source("volume", entry.name, target, volume=volume))
        else:
            sources.append(
                Source("path", entry.name, entry.target, container=first, missing_ok=True)
            )
    return write_backup(
        deployed,
        sources,
        directory,
        f"{record.stamp}/replaced-{now}",
        note=f"what stood there before restoring {record.stamp}",
    )


def _restore_volume(
    deployed: Deployed,
    record: BackupRecord,
    entry: Entry,
    before: Entry,
    replaced: BackupRecord,
) -> str:
    volume = deployed.current_volume(entry)
    image = deployed.helper_image()
    assert image is not None  # checked in _preflight
    client = deployed.engine.client
    if volume is not None:
        for stale in deployed.engine.stale_helpers(volume.name):
            stale.remove(force=True)
        holders = deployed.engine.volume_users(volume.name)
        if holders:
            # Stopped containers still hold it, so it cannot be removed: empty it.
            _empty_in_place(deployed, image, volume.name, replaced, before, holders)
            how = f"emptied in place (held by stopped {', '.join(str(c.name) for c in holders)})"
        else:
            config = VolumeConfig.of(volume)
            volume.remove()
            how = "removed"
            if not entry.absent:
                config.create(client, volume.name)
                how = "removed and recreated"
    else:
        how = "did not exist"
        if not entry.absent:
            assert entry.volume is not None
            entry.volume.create(client, entry.target)
            how = "did not exist; created"
    if entry.absent:
        return f"{entry.label}: absent in the backup; {how}"
    assert entry.archive is not None
    with (
        helper(deployed, image, entry.target, read_only=False) as mounted,
        (record.directory / entry.archive).open("rb") as archive,
    ):
        mounted.put_archive("/", archive)
    return f"{entry.label}: {how}, restored from {entry.archive}"


def _empty_in_place(
    deployed: Deployed,
    image: str,
    volume: str,
    replaced: BackupRecord,
    before: Entry,
    holders: list[Container],
) -> None:
    """Remove the volume's top-level entries, as listed in the set-aside archive."""
    if before.absent or before.archive is None:
        return
    archive = replaced.directory / before.archive
    prefix = VOLUME_MOUNT.lstrip("/") + "/"
    with tarfile.open(archive, "r:") as tar:
        tops = sorted(
            {m.name[len(prefix) :].split("/")[0] for m in tar if m.name.startswith(prefix)}
        )
    if not tops:
        return
    # Started, unlike the other throwaway containers: only a running rm can empty a
    # volume that stopped containers hold.
    container = deployed.engine.client.containers.create(
        image,
        entrypoint=["rm", "-rf", "--", *(f"{VOLUME_MOUNT}/{name}" for name in tops)],
        user="0:0",
        labels={HELPER_LABEL: "1"},
        network_mode="none",
        mounts=[Mount(VOLUME_MOUNT, volume, type="volume", no_copy=True)],
    )
    try:
        try:
            container.start()
            status = container.wait(timeout=300).get("StatusCode", 1)
        except docker.errors.APIError as exc:
            status, output = None, str(exc)
        else:
            output = container.logs().decode(errors="replace")
        if status != 0:
            names = " ".join(str(c.name) for c in holders)
            raise ReleaseError(
                f"cannot empty volume {volume} in place (rm in the service's image failed:"
                f" {output.strip() or f'exit {status}'}); it is held by stopped {names}",
                untouched=f"volume {volume} as it was; the other entries may be restored",
                next_command=(
                    f"remove the stopped containers so the volume can be recreated"
                    f" (docker rm {names}), then rerun the revert"
                ),
            )
    finally:
        container.remove(force=True)


def _restore_path(record: BackupRecord, entry: Entry, first: Container | None) -> str:
    if entry.absent:
        return (
            f"{entry.label}: absent in the backup (no container then); left as it is,"
            " it goes with the container"
        )
    assert first is not None and entry.archive is not None  # checked in _preflight
    parent, base = posixpath.split(entry.target)
    # Replacing a directory with a file removes it, whatever was added since.
    first.put_archive(parent, _empty_file_tar(base))
    with (record.directory / entry.archive).open("rb") as archive:
        first.put_archive(parent, archive)
    return f"{entry.label}: replaced in {first.name}, restored from {entry.archive}"


def _empty_file_tar(name: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.addfile(tarfile.TarInfo(name), io.BytesIO(b""))
    return buf.getvalue()
