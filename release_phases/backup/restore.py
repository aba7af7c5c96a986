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
from release_phases.backup.take import DUMP_TIMEOUT, Source, Writer, dump_source
from release_phases.errors import ReleaseError
from release_phases.host import Host
from release_phases.host.compose import ComposeProject
from release_phases.host.engine import HELPER_LABEL
from release_phases.host.shell import render
from release_phases.manifest import Dump, Manifest

STOPPED_STATES = frozenset({"created", "exited", "dead"})


class Restore:
    """Putting one backup back, step by step in the revert's order.

    1. ``Restore(...)`` verifies the backup; nothing is touched.
    2. ``set_aside_dump()``, while the service still runs: a fresh dump of what stands
       there (with the command `commands` gives) into ``<stamp>/replaced-<now>/``.
       Only now can it be taken: the service is about to stop, and once its volumes
       are restored a dump would show the backup's data, not what stood there.
    3. (the caller stops the service and creates its containers without starting them)
    4. ``files()``: the volumes and paths that stand there are archived into the same
       ``replaced-<now>/`` and its record is written, so the revert itself can be
       undone by restoring that stamp; then they are put back and checked.
    5. (the caller starts the service and waits until it is healthy)
    6. ``dump()``: the backup's dump is fed on stdin to its restore command, in the
       compose service it was taken from (`compose exec -T`: its first container).

    ``abandon()`` removes a set-aside that never got its record (a failure before
    ``files`` wrote it): half a set-aside must not look like a backup.
    """

    def __init__(
        self,
        host: Host,
        manifest: Manifest,
        project: ComposeProject,
        root: Path,
        stamp: str,
        *,
        timeout: float = DUMP_TIMEOUT,
    ) -> None:
        self.deployed = Deployed(host, manifest, project)
        self.record = verify(root, manifest.service, stamp)
        #: Seconds the set-aside dump, and the dump's restore, may each run.
        self.timeout = timeout
        self._aside: Writer | None = None
        self.replaced: BackupRecord | None = None

    @property
    def dumps(self) -> list[tuple[int, Entry]]:
        """The record's dump entries with their numbers (places in the record)."""
        return [(n, e) for n, e in enumerate(self.record.entries, start=1) if e.kind == "dump"]

    def commands(self, entry: Entry) -> Dump:
        """The dump's commands: the manifest's, when it declares a dump, else those recorded
        with it. The manifest's come first so that a mistake in ``restore``, which only a
        revert ever runs, can be fixed by a commit rather than by editing a backup."""
        assert entry.dump is not None  # checked when the record was read
        return self.deployed.manifest.backup.dump or entry.dump

    def _writer(self) -> Writer:
        if self._aside is None:
            while True:
                now = clock.stamp()
                directory = self.record.directory / f"replaced-{now}"
                if not directory.exists():
                    break
                time.sleep(0.2)
            self._aside = Writer(
                self.deployed,
                directory,
                f"{self.record.stamp}/replaced-{now}",
                note=f"what stood there before restoring {self.record.stamp}",
            )
        return self._aside

    def set_aside_dump(self) -> list[str]:
        """Dump what the running service holds now, before anything stops; a line each.

        A service that does not run has nothing to dump: its set-aside dump is
        recorded absent, and the line says that no copy of it was kept.
        """
        lines = []
        for number, entry in self.dumps:
            writer = self._writer()
            with writer.guard():
                dump = self.commands(entry)
                source = dump_source(self.deployed, dump, self.timeout, missing_ok=True)
                taken = writer.add(number, source)
            if taken.absent:
                lines.append(
                    f"{entry.label}: {self.deployed.service} was not running, so nothing"
                    " could be dumped: no copy of what its restore replaces is kept"
                )
            else:
                lines.append(
                    f"{entry.label}: what stands there now was dumped to"
                    f" {writer.directory / str(taken.archive)}"
                )
        return lines

    def files(self) -> RestoreReport:
        """Set aside what stands in the volumes and paths, then put the backup's back."""
        deployed, record = self.deployed, self.record
        first = deployed.first_container()
        writer = self._writer()
        with writer.guard():
            _preflight(deployed, record, first)
            for number, entry in enumerate(record.entries, start=1):
                if entry.kind != "dump":
                    writer.add(number, _aside_source(deployed, entry, first))
            replaced = writer.finish()
        self.replaced = replaced
        undo = self.undo
        actions = []
        for entry, before in zip(record.entries, replaced.entries, strict=True):
            if entry.kind == "dump":
                continue  # fed back by dump(), once the service runs
            try:
                if entry.kind == "volume":
                    action = _restore_volume(deployed, record, entry, before, replaced)
                else:
                    action = _restore_path(record, entry, first)
                check_restored(deployed, record, entry, first, undo)
            except docker.errors.APIError as exc:
                raise ReleaseError(
                    f"restore of {deployed.service} {entry.label} from {record.stamp}"
                    f" failed: {exc}",
                    untouched=undo,
                    next_command=(
                        f"fix the cause, then rerun the revert; {deployed.compose('ps')}"
                    ),
                ) from None
            actions.append(action)
        return RestoreReport(record=record, replaced=replaced, actions=tuple(actions))

    @property
    def undo(self) -> str:
        assert self.replaced is not None  # written by files()
        return (
            f"what stood there is kept in {self.replaced.directory}; restore stamp"
            f" {self.replaced.stamp!r} to put it back"
        )

    def dump(self) -> list[str]:
        """Feed each dump of the backup to its restore command in the running service.

        The restore reads the file on stdin as the file is read: nothing is held in
        memory. Its output (a line each, and its tail) goes into the report.
        """
        lines = []
        for _, entry in self.dumps:
            if entry.absent:
                lines.append(f"{entry.label}: absent in the backup (no container ran then)")
                continue
            assert entry.archive is not None
            argv = self.deployed.project.exec(entry.target, self.commands(entry).restore)
            path = self.record.directory / entry.archive
            result = self.deployed.host.run(
                argv, timeout=self.timeout, check=False, stdin_from=path
            )
            shown = f"`{render(argv)} < {path}`"
            if not result.ok:
                how = (
                    f"timed out after {result.duration:.0f}s (it may still run in the container)"
                    if result.timed_out
                    else f"exited {result.returncode}"
                )
                raise ReleaseError(
                    f"restore of {self.deployed.service}'s dump from {self.record.stamp}"
                    f" failed: {shown} {how}:\n{result.tail(20)}",
                    untouched=self.undo,
                    next_command=(
                        f"fix the service, or backup.dump.restore in {self.deployed.source}"
                        f" (committed); to see why, run it by hand: {render(argv)} < {path}"
                    ),
                    rc=result.returncode if result.returncode > 0 else 1,
                )
            said = result.tail(20).strip()
            lines.append(f"{entry.label}: {shown} exited 0" + (f"\n{said}" if said else ""))
        return lines

    def abandon(self) -> None:
        """Drop a set-aside that has no record yet (the revert failed before files())."""
        if self._aside is not None:
            self._aside.discard()


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
        elif entry.kind == "path" and not entry.absent:
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


def _aside_source(deployed: Deployed, entry: Entry, first: Container | None) -> Source:
    """What stands now where ``entry`` restores to, as a source to archive."""
    if entry.kind == "volume":
        volume = deployed.current_volume(entry)
        target = volume.name if volume else entry.target
        return Source("volume", entry.name, target, volume=volume)
    return Source("path", entry.name, entry.target, container=first, missing_ok=True)


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
