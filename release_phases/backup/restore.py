"""Restoring a backup: refuse what could not finish, set aside what stands, put it back.

Nothing of it runs inside the service's image: volumes are removed, created again and
filled, by GNU tar on this host for a plain local volume, else through the Docker API
(``put_archive`` on a container that is created, never started), and paths are written
through the API into the service's own created container.
An image holding one static binary, with no shell, ``rm`` or ``tar``, is restored like
any other.
"""

from __future__ import annotations

import io
import os
import posixpath
import tarfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import docker.errors
from docker.models.containers import Container
from docker.models.volumes import Volume

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
from release_phases.host.engine import (
    ONEOFF_LABEL,
    PROJECT_LABEL,
    engine_failed,
    extract_argv,
    sync_argv,
    writable_directory,
)
from release_phases.host.shell import Result, render
from release_phases.manifest import Dump, Manifest

STOPPED_STATES = frozenset({"created", "exited", "dead"})


class Restore:
    """Putting one backup back, step by step in the revert's order.

    Its errors name what to do about their cause; the revert adds the command that
    goes on (the revert itself, run again, which starts each step afresh).

    1. ``Restore(...)`` verifies the backup; nothing is touched.
    2. ``preflight()``, while the service still runs: refuses what the restore could
       not finish (a volume another service's container holds, no local image to
       mount volumes in), so that a refusal leaves the service running.
    3. ``set_aside_dump()``, while the service still runs: a fresh dump of what stands
       there (with the command `commands` gives) into ``<stamp>/replaced-<now>/``.
       Only now can it be taken: the service is about to stop, and once its volumes
       are restored a dump would show the backup's data, not what stood there.
    4. (the caller stops the service)
    5. ``volumes()``: the volumes and paths that stand there are archived into the same
       ``replaced-<now>/`` and its record is written, so the revert itself can be
       undone by restoring that stamp; then the service's stopped containers that
       hold a volume are removed, and each volume is removed, created again as it
       was, filled from the backup and checked.
    6. (the caller creates the service's containers without starting them)
    7. ``paths()``: the paths are put back into the first container and checked.
    8. (the caller starts the service and waits until it is healthy)
    9. ``dump()``: the backup's dump is fed on stdin to its restore command, in the
       compose service it was taken from (`compose exec -T`: its first container).

    ``abandon()`` removes a set-aside that never got its record (a failure before
    ``volumes`` wrote it): half a set-aside must not look like a backup.
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
        #: What stood there before this revert, set aside by an earlier run of it (one
        #: that failed after the set-aside): kept as the one to undo with. Set aside
        #: again, the data a failed restore left would take its place.
        self.earlier = self._earlier_set_aside()
        self.replaced: BackupRecord | None = self.earlier
        self._image: str | None = None  # see _require_image
        self._actions: list[str] = []
        #: Seconds ``volumes`` spent setting aside what stood there, filling the volumes
        #: again and checking them against the backup (the revert logs them).
        self.seconds = {"set_aside": 0.0, "fill": 0.0, "check": 0.0}

    @property
    def dumps(self) -> list[tuple[int, Entry]]:
        """The record's dump entries with their numbers (places in the record)."""
        return [(n, e) for n, e in enumerate(self.record.entries, start=1) if e.kind == "dump"]

    def _of_kind(self, kind: str) -> list[Entry]:
        return [e for e in self.record.entries if e.kind == kind]

    def commands(self, entry: Entry) -> Dump:
        """The dump's commands: the manifest's, when it declares a dump, else those recorded
        with it. The manifest's come first so that a mistake in ``restore``, which only a
        revert ever runs, can be fixed by a commit rather than by editing a backup."""
        assert entry.dump is not None  # checked when the record was read
        return self.deployed.manifest.backup.dump or entry.dump

    def preflight(self) -> list[str]:
        """Refuse, before the service stops, what the restore could not finish; what was
        found, a line per volume."""
        deployed = self.deployed
        lines = []
        volumes = self._of_kind("volume")
        if volumes:
            self._require_image()
        for entry in volumes:
            volume = deployed.current_volume(entry)
            if volume is None:
                lines.append(f"{entry.label}: does not exist now")
                continue
            holders = self._holders(entry, volume)
            held = ", ".join(str(c.name) for c in holders) or "no container"
            lines.append(
                f"{entry.label}: held by {held}; it is removed and created again"
                + (" once they are stopped and removed" if holders else "")
            )
        return lines

    def _require_image(self) -> str:
        """The image to create the throwaway containers from, found once: the service's
        containers, whose image it is, are removed before the volumes are restored."""
        if self._image is None:
            self._image = self.deployed.helper_image()
        if self._image is None:
            ref = self.deployed.manifest.image.ref
            raise ReleaseError(
                f"cannot restore {self.deployed.service}: no local image to mount volumes in"
                f" (no container, and {ref} is not local)",
                untouched=NOTHING_RESTORED,
                next_command=f"docker pull {ref}",
            )
        return self._image

    def _holders(self, entry: Entry, volume: Volume) -> list[Container]:
        """The containers holding a volume to restore, all of them the service's own.

        A volume is restored by removing it and creating it again, which Docker
        refuses while any container, stopped or not, holds it. The service's own
        containers go and come back with it; another's would be left pointing at a
        volume that is no longer the one it had, so it is refused. So is a one-off
        container of the service (`compose run`): `compose stop` leaves it running,
        and it is no container `up` creates again.
        """
        deployed = self.deployed
        own = {c.id for c in deployed.containers() if c.labels.get(ONEOFF_LABEL) != "True"}
        holders = deployed.engine.volume_users(volume.name)
        others = [str(c.name) for c in holders if c.id not in own]
        if others:
            names = " ".join(others)
            raise ReleaseError(
                f"cannot restore {deployed.service} {entry.label}: it is also held by"
                f" {', '.join(others)}, not a container of {deployed.service} that compose"
                " creates; the volume is restored by removing it and creating it again,"
                " which Docker refuses while any container holds it",
                untouched=NOTHING_RESTORED,
                next_command=(
                    "remove them, knowing that the restore replaces the data they share:"
                    f" `docker rm -f {names}` (a compose service's container comes back with"
                    " its next `up`)"
                ),
            )
        return holders

    def _earlier_set_aside(self) -> BackupRecord | None:
        found = sorted(self.record.directory.glob("replaced-*/record.json"))
        for path in found:
            stamp = f"{self.record.stamp}/{path.parent.name}"
            try:
                return BackupRecord.load(path.parent, self.deployed.service, stamp)
            except ReleaseError:
                continue  # not a whole record: not one to undo with
        return None

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
        if self.earlier is not None:
            return [
                f"what stood there before this revert is kept in {self.earlier.directory}"
                " (set aside by an earlier run of it): not set aside again"
            ]
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

    def volumes(self) -> list[str]:
        """With the service stopped: set aside what stands in its volumes and paths, then
        put the backup's volumes back; a line per volume."""
        deployed, record = self.deployed, self.record
        image = self._require_image() if self._of_kind("volume") else ""
        first = deployed.first_container()
        lines = []
        if self.earlier is not None:
            with self._failing("volumes"):
                holders = self._stopped_holders()
            lines.append(
                f"what stood there before this revert is kept in {self.earlier.directory}"
                " (set aside by an earlier run of it): not set aside again"
            )
        else:
            began = time.monotonic()
            writer = self._writer()
            with writer.guard():
                holders = self._stopped_holders()
                for number, entry in enumerate(record.entries, start=1):
                    if entry.kind != "dump":
                        writer.add(number, _aside_source(deployed, entry, first))
                self.replaced = writer.finish()
            self.seconds["set_aside"] = time.monotonic() - began
        with self._failing("volumes"):
            for container in holders:
                # Not -v: anonymous volumes stay on the host (README: what a restore needs).
                container.remove()
            if holders:
                names = ", ".join(str(c.name) for c in holders)
                lines.append(f"removed the stopped containers holding its volumes: {names}")
        for entry in self._of_kind("volume"):
            with self._failing(entry.label):
                began = time.monotonic()
                done, written = _restore_volume(deployed, record, entry, image, self.undo)
                filled = time.monotonic()
                how = self._check_volume(entry, image, written)
                if written is not None:
                    done += " and flushed to disk"
                lines.append(f"{done}; {how}" if how else done)
                self.seconds["fill"] += filled - began
                self.seconds["check"] += time.monotonic() - filled
        self._actions += lines
        return lines

    def _check_volume(self, entry: Entry, image: str, written: Path | None) -> str:
        """Check a restored volume against the backup; how (`check_restored`).

        A volume tar filled on this host (``written``: its directory) is flushed to
        disk meanwhile: the check reads it back from the page cache while the kernel
        writes it out, so the two take about as long as the longer of them.
        """
        check = partial(check_restored, self.deployed, self.record, entry, None, self.undo)
        if written is None:
            return check(image=image)
        argv = sync_argv(written)
        with ThreadPoolExecutor(max_workers=1) as pool:
            flushing = pool.submit(self.deployed.host.run, argv, timeout=None, check=False)
            how = check(image=image)
            flushed = flushing.result()
        if not flushed.ok:
            raise _host_failed(self.deployed, entry, render(argv), flushed, self.undo)
        return how

    def _stopped_holders(self) -> list[Container]:
        """The service's containers holding a volume to restore, refused unless stopped."""
        deployed = self.deployed
        holders: dict[str, Container] = {}
        for entry in self._of_kind("volume"):
            volume = deployed.current_volume(entry)
            if volume is not None:
                holders.update((str(c.id), c) for c in self._holders(entry, volume))
        running = [str(c.name) for c in holders.values() if c.status not in STOPPED_STATES]
        if running:
            raise ReleaseError(
                f"cannot restore {deployed.service}'s volumes: {', '.join(running)} still running",
                untouched=NOTHING_RESTORED,
                next_command=f"stop them first: {deployed.compose('stop')}",
            )
        return list(holders.values())

    def paths(self) -> RestoreReport:
        """With the service's containers created, not started: put the backup's paths
        back into its first container. Returns what ``volumes`` and this did."""
        deployed, record = self.deployed, self.record
        assert self.replaced is not None, "volumes() sets aside what stands first"
        paths = [e for e in self._of_kind("path") if not e.absent]
        first = deployed.first_container()
        if paths:
            _refuse_container(deployed, paths[0], first)
            assert first is not None
            for entry in paths:
                deployed.refuse_mounts(first, entry.target)
        for entry in self._of_kind("path"):
            with self._failing(entry.label):
                done = _restore_path(entry, record, first)
                how = check_restored(deployed, record, entry, first, self.undo)
                self._actions.append(f"{done}; {how}" if how else done)
        return RestoreReport(record=record, replaced=self.replaced, actions=tuple(self._actions))

    @contextmanager
    def _failing(self, what: str) -> Iterator[None]:
        """The Docker Engine failing (refusing, or not answering) while restoring, as an
        operator's error that says where what stood there was kept."""
        try:
            yield
        except Exception as exc:
            if not engine_failed(exc):
                raise
            raise ReleaseError(
                f"restore of {self.deployed.service} {what} from {self.record.stamp} failed: {exc}",
                untouched=self.undo,
                next_command=(
                    f"fix the cause (to see the containers: {self.deployed.compose('ps', '-a')})"
                ),
            ) from None

    @property
    def undo(self) -> str:
        assert self.replaced is not None  # written by volumes()
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
        """Drop a set-aside that has no record yet (the revert failed before volumes())."""
        if self._aside is not None:
            self._aside.discard()


def _refuse_container(deployed: Deployed, entry: Entry, first: Container | None) -> None:
    """Refuse a path restore without a created, stopped first container to write into."""
    service = deployed.manifest.containers[0]
    if first is None:
        raise ReleaseError(
            f"cannot restore {deployed.service} {entry.label}: no container of {service}"
            " exists to restore it into",
            untouched="the paths: nothing was written to them",
            next_command=f"see why: {deployed.compose('ps', '-a', service)}",
        )
    if first.status not in STOPPED_STATES:
        raise ReleaseError(
            f"cannot restore {deployed.service} {entry.label}: {first.name} is {first.status}",
            untouched="the paths: nothing was written to them",
            next_command=f"stop it first: {deployed.compose('stop')}",
        )


def _aside_source(deployed: Deployed, entry: Entry, first: Container | None) -> Source:
    """What stands now where ``entry`` restores to, as a source to archive."""
    if entry.kind == "volume":
        volume = deployed.current_volume(entry)
        target = volume.name if volume else entry.target
        return Source("volume", entry.name, target, volume=volume)
    return Source("path", entry.name, entry.target, container=first, missing_ok=True)


def _restore_volume(
    deployed: Deployed, record: BackupRecord, entry: Entry, image: str, undo: str
) -> tuple[str, Path | None]:
    """Remove the volume, create it again as it was, and fill it from the archive; what
    was done, and the directory tar filled on this host (None when the API did),
    which is still to be flushed to disk.

    Removing it is the one exact way to empty it that needs no process: nothing
    runs in the service's image. A volume recorded absent is left removed when
    Compose made it (its `up` creates it again, empty); one made by hand (external)
    is created again empty, since Compose would refuse to start without it.

    A plain local volume on this host is filled by GNU tar where its files go
    (`_extract`); any other through the API, into a container that mounts it.
    """
    client = deployed.engine.client
    volume = deployed.current_volume(entry)
    if volume is not None:
        for stale in deployed.engine.stale_helpers(volume.name):
            stale.remove(force=True)
        config = VolumeConfig.of(volume)
        volume.remove()
        if entry.absent and PROJECT_LABEL in config.labels:
            return f"{entry.label}: absent in the backup; removed (compose creates it empty)", None
        made = config.create(client, volume.name)
        how = "removed and created again"
    elif entry.absent:
        return f"{entry.label}: absent in the backup; does not exist", None
    else:
        assert entry.volume is not None
        made = entry.volume.create(client, entry.target)
        how = "did not exist; created"
    if entry.absent:
        return f"{entry.label}: absent in the backup; {how}, empty", None
    assert entry.archive is not None
    archive = record.directory / entry.archive
    local = writable_directory(made.attrs, os.environ.get("DOCKER_HOST"))
    top = _top_member(archive) if local is not None else None
    if local is not None and top is not None:
        _extract(deployed, entry, archive, local, top, undo)
        return f"{entry.label}: {how}, restored from {entry.archive}", local
    with (
        helper(deployed, image, entry.target, read_only=False) as mounted,
        archive.open("rb") as fh,
    ):
        mounted.put_archive("/", fh)
    return f"{entry.label}: {how}, restored from {entry.archive}", None


def _top_member(archive: Path) -> tarfile.TarInfo | None:
    """The archive's first member, when it is the volume's own directory (as the engine's
    archives, by tar or by the API, begin); else None, and the API restores it."""
    with tarfile.open(archive, mode="r|") as tar:
        first = next(iter(tar), None)
    top = VOLUME_MOUNT.lstrip("/")
    return first if first is not None and first.isdir() and first.name == top else None


def _extract(
    deployed: Deployed,
    entry: Entry,
    archive: Path,
    directory: Path,
    top: tarfile.TarInfo,
    undo: str,
) -> None:
    """Fill the volume's directory, just created empty, with GNU tar on this host; give
    the directory the archive's owner, mode and time. The caller flushes it to disk.

    The same files as `put_archive` makes (the check after compares them), sooner:
    tar writes where the files go instead of the daemon receiving them over its
    socket. For 1 GiB from a cold cache, 1.1 s with the flush, where `put_archive`
    took 1.0 to 2.3 s (median 1.5) without one. The flush makes the restore one a
    power cut cannot undo once the revert has said it is done.
    """
    argv = extract_argv(directory)
    result = deployed.host.run(argv, timeout=None, check=False, stdin_from=archive)
    if not result.ok:
        raise _host_failed(deployed, entry, f"{render(argv)} < {archive}", result, undo)
    # Owner first: changing it clears the set-user-ID and set-group-ID bits.
    os.chown(directory, top.uid, top.gid)
    os.chmod(directory, top.mode & 0o7777)
    os.utime(directory, (top.mtime, top.mtime))


def _host_failed(
    deployed: Deployed, entry: Entry, shown: str, result: Result, undo: str
) -> ReleaseError:
    """A command that restores a volume on this host (tar, the flush) failed."""
    return ReleaseError(
        f"restore of {deployed.service} {entry.label}: `{shown}` exited"
        f" {result.returncode}: {result.tail(20).strip() or '(no message)'}",
        untouched=undo,
        # The revert adds its own command: run again, it restores the volume afresh.
        next_command=f"fix the cause (see {deployed.compose('ps', '-a')})",
    )


def _restore_path(entry: Entry, record: BackupRecord, first: Container | None) -> str:
    if entry.absent:
        return (
            f"{entry.label}: absent in the backup (no container then); left as it is,"
            " it goes with the container"
        )
    assert first is not None and entry.archive is not None  # checked in paths()
    parent, base = posixpath.split(entry.target)
    made = _make_dirs(first, parent)
    # Replacing a directory with a file removes it, whatever was added since.
    first.put_archive(parent, _tar(_member(base, tarfile.REGTYPE)))
    with (record.directory / entry.archive).open("rb") as archive:
        first.put_archive(parent, archive)
    return (
        f"{entry.label}: replaced in {first.name}"
        + (f" (created {parent} first)" if made else "")
        + f", restored from {entry.archive}"
    )


def _make_dirs(container: Container, path: str) -> bool:
    """Create ``path`` and its missing parents in the container, through the API.

    The reverted image may lack a directory the service made at run time; no
    ``mkdir`` in it is needed. An empty archive put into a directory changes
    nothing, so it finds the deepest one that exists; only those below it are
    created (owned by root, mode 0755). Returns whether any was.
    """
    missing: list[str] = []
    existing = path
    while existing != "/":
        try:
            container.put_archive(existing, _tar())
            break
        except docker.errors.NotFound:
            existing, name = posixpath.split(existing)
            missing.insert(0, name)
    if not missing:
        return False
    dirs = [
        _member(posixpath.join(*missing[: n + 1]), tarfile.DIRTYPE) for n in range(len(missing))
    ]
    container.put_archive(existing, _tar(*dirs))
    return True


def _member(name: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.mtime = int(time.time())
    return info


def _tar(*members: tarfile.TarInfo) -> bytes:
    """An archive of empty files and directories (none: an empty archive)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for member in members:
            tar.addfile(member, io.BytesIO(b""))
    return buf.getvalue()
