"""Taking a backup: resolve what is declared, archive it, write record.json last."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import posixpath
import re
import shutil
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import docker.errors
from docker.models.containers import Container
from docker.models.volumes import Volume

from release_phases import atomic, clock, progress
from release_phases.backup.deployed import VOLUME_MOUNT, Deployed, helper
from release_phases.backup.record import (
    RECORD_NAME,
    STAMP,
    SUMS_NAME,
    BackupRecord,
    Entry,
    VolumeConfig,
    sha256_file,
)
from release_phases.errors import ReleaseError
from release_phases.host import Host
from release_phases.host.compose import ComposeProject
from release_phases.host.engine import (
    archive_argv,
    engine_failed,
    project_volume,
    readable_directory,
    volume_create_argv,
)
from release_phases.host.shell import render
from release_phases.manifest import Dump, Manifest

#: Seconds a dump may run when the caller gives no limit (release_compose_timeout's default).
DUMP_TIMEOUT = 600.0
#: A write's errors that mean the filesystem (or the user's quota) is full.
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
#: Bytes free under which a filesystem counts as full: less than a dump's next write
#: would need, whatever else frees a block meanwhile.
FULL = 1024 * 1024
#: How a command's output is checksummed while it is written: bytes a read, and seconds
#: to wait when the reader has caught up with the writer.
FOLLOW_CHUNK = 1024 * 1024
FOLLOW_PAUSE = 0.005


@dataclass
class Source:
    """One thing to archive, resolved against what runs now."""

    kind: str
    name: str
    target: str
    volume: Volume | None = None
    container: Container | None = None
    missing_ok: bool = False  # a path missing from the container is recorded absent
    dump: Dump | None = None
    timeout: float = DUMP_TIMEOUT  # seconds the dump may run


def take(
    host: Host,
    manifest: Manifest,
    project: ComposeProject,
    root: Path,
    stamp: str | None = None,
    *,
    dump_timeout: float = DUMP_TIMEOUT,
    note: str = "taken before a release",
) -> BackupRecord:
    """Dump and archive what the service declares under ``root/<service>/<stamp>``."""
    deployed = Deployed(host, manifest, project)
    stamp = stamp or clock.stamp()
    if not STAMP.fullmatch(stamp):
        raise ReleaseError(
            f"backup stamp {stamp!r} is not YYYYmmdd_HHMMSS",
            untouched=f"everything: no backup was written for {manifest.service}",
            next_command="rerun without a stamp, or give one like 20240131_235959",
        )
    directory = root / manifest.service / stamp
    sources = _plan(deployed, dump_timeout) if not manifest.backup.empty else []
    return write_backup(deployed, sources, directory, stamp, note=note)


def _plan(deployed: Deployed, dump_timeout: float) -> list[Source]:
    """Resolve the dump and every declared volume and path, failing before anything is
    written. The dump comes first, so a revert's set-aside can take its own in the
    same place of the record while the service still runs."""
    manifest = deployed.manifest
    project = deployed.project.name
    containers = deployed.containers()
    sources = []
    dump = manifest.backup.dump
    if dump is not None:
        sources.append(dump_source(deployed, dump, dump_timeout))
    for key in manifest.backup.volumes:
        volume = deployed.resolve(key)
        # A missing volume is "nothing to save" only on a first release, when none of
        # the service's containers exist. Once the service is deployed, a declared
        # volume that is not there means the manifest names a key that compose does
        # not create (a typo, or a volume new in this release): saying so beats a
        # backup that silently holds nothing.
        if volume is None and containers:
            raise ReleaseError(
                f"backup of {manifest.service}: volume {key!r} does not exist"
                f" (neither {project_volume(project, key)!r} nor {key!r}),"
                f" yet the service is deployed ({', '.join(str(c.name) for c in containers)})",
                untouched=f"everything: no backup was written for {manifest.service}",
                next_command=(
                    f"check backup.volumes in {deployed.source} against"
                    " `docker volume ls`; if the volume is new in this release, create it"
                    " first: " + render(volume_create_argv(project, key))
                ),
            )
        target = volume.name if volume else project_volume(project, key)
        sources.append(Source("volume", key, target, volume=volume))
    first = deployed.first_container()
    for declared in manifest.backup.paths:
        path = _clean_path(deployed, declared)
        if first is not None:
            deployed.refuse_mounts(first, path)
        sources.append(Source("path", declared, path, container=first))
    return sources


def dump_source(
    deployed: Deployed, dump: Dump, timeout: float, *, missing_ok: bool = False
) -> Source:
    """The dump, to run in the service's first container, which must be running.

    No container at all (a first release) records the dump absent, as a missing
    volume is; so does a stopped one when ``missing_ok`` (a revert's set-aside of a
    service that no longer runs). Otherwise a container that does not run is refused
    here, before anything is written: `compose exec` could only fail.
    """
    service = deployed.project.services[0]
    first = deployed.first_container()
    if first is not None and first.status != "running":
        if missing_ok:
            first = None
        else:
            raise ReleaseError(
                f"dump of {deployed.service}: `{render(dump.command)}` runs in the running"
                f" service, but its first container {first.name} is {first.status}",
                untouched=f"{deployed.service} and its data: no backup was written",
                next_command=f"start it: {deployed.compose('start', service)}, then rerun",
            )
    return Source(
        "dump", render(dump.command), service, container=first, dump=dump, timeout=timeout
    )


def _clean_path(deployed: Deployed, declared: str) -> str:
    path = posixpath.normpath(declared)
    if not path.startswith("/") or path == "/":
        raise ReleaseError(
            f"backup of {deployed.service}: path {declared!r} must be absolute and not /",
            untouched=f"everything: no backup was written for {deployed.service}",
            next_command=f"fix backup.paths in {deployed.source}",
        )
    return path


class Writer:
    """One backup directory being filled: archives, then SHA256SUMS, record.json last.

    A directory with a record is a complete backup; until `finish` wrote it, a
    failure inside `guard` removes the directory, so half a backup never looks like
    one. Archives are named by their number, the entry's place in the record, so
    entries may be added in another order than the record lists them.

    A full disk is the writer's own error to name: its writes fail with ENOSPC, and
    `guard` says so with the filesystem, what had been written and what is free.
    """

    def __init__(self, deployed: Deployed, directory: Path, stamp: str, *, note: str) -> None:
        if directory.exists():
            raise ReleaseError(
                f"backup directory {directory} already exists",
                untouched=f"{directory} and the service: nothing was written",
                next_command="wait a second and rerun (stamps have one-second resolution)",
            )
        self.deployed = deployed
        self.directory = directory
        self.stamp = stamp
        self.note = note
        self.entries: dict[int, Entry] = {}
        self.record: BackupRecord | None = None
        #: Bytes of archives written into the directory so far, the last one's part too.
        self.written = 0
        try:
            atomic.private_dir(directory)
        except OSError as exc:  # a full disk can refuse even the directory
            if exc.errno in FULL_ERRNOS:
                raise self._no_space(exc) from None
            raise

    def add(self, number: int, source: Source) -> Entry:
        if source.kind == "dump":
            # Named for the service it ran in: the command is no name for a file.
            name = f"{number:02d}-dump-{_slug(source.target)}.dump"
            entry = _dump(self, source, name)
        else:
            name = f"{number:02d}-{source.kind}-{_slug(source.name)}.tar"
            entry = _archive(self, source, name)
        self.entries[number] = entry
        return entry

    def finish(self) -> BackupRecord:
        record = BackupRecord(
            service=self.deployed.service,
            stamp=self.stamp,
            directory=self.directory,
            entries=tuple(self.entries[n] for n in sorted(self.entries)),
            project=self.deployed.project.name,
            taken_at=clock.iso(),
            note=self.note,
        )
        sums = "".join(f"{e.sha256}  {e.archive}\n" for e in record.archives)
        atomic.write(self.directory / SUMS_NAME, [sums.encode()])
        # Last: a directory with a record is a complete backup.
        text = json.dumps(record.to_json(), indent=2) + "\n"
        atomic.write(self.directory / RECORD_NAME, [text.encode()])
        self.record = record
        return record

    def discard(self) -> None:
        """Remove the directory unless it became a complete backup."""
        if self.record is None:
            # Only what this writer created goes: a half backup must not look like one.
            shutil.rmtree(self.directory, ignore_errors=True)

    def save(self, chunks: Iterable[bytes], name: str, what: str) -> str:
        """Write an archive the engine streams into the directory, as `atomic.write`
        does; its sha256. What reached the disk is counted, a failed write's part too;
        how much has come is told as it comes (``what``: `volume web-data`).

        The stream is closed however the write ends: an archive stream left open
        holds its container busy, so removing the helper after a failed write would
        wait for the SDK's read timeout (a minute) instead of failing at once.
        """
        digest = hashlib.sha256()
        meter = progress.Meter(self.deployed.service, what)
        count = 0
        try:
            with atomic.replacing(self.directory / name) as tmp:
                try:
                    with tmp.open("wb") as fh:
                        for chunk in chunks:
                            digest.update(chunk)
                            fh.write(chunk)
                            count += len(chunk)
                            meter.update(count)
                finally:
                    self.written += tmp.stat().st_size
            meter.end(count)
            return digest.hexdigest()
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    def save_output(self, argv: list[str], name: str, what: str) -> str:
        """Write what a command prints (an archive made on this host) into the directory
        as `save` does; its sha256, taken while the command writes: a thread reads the
        file just behind it, from the page cache, so the checksum costs no second pass.

        GNU tar's exit status 1 (a file changed while it was read) is a live service's
        normal state, as it is for the API's archive; anything else fails the backup.
        """
        with atomic.replacing(self.directory / name) as tmp:
            meter = progress.Meter(self.deployed.service, what)
            with _Follower(tmp, meter) as follower:
                result = self.deployed.host.run(argv, timeout=None, check=False, stdout_to=tmp)
            self.written += tmp.stat().st_size
            if not result.ok and shutil.disk_usage(self.directory).free < FULL:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))
            if result.returncode not in (0, 1):
                raise ReleaseError(
                    f"backup of {self.deployed.service}: `{render(argv)}` exited"
                    f" {result.returncode}: {result.tail(20).strip() or '(no message)'}",
                    untouched=f"{self.deployed.service} and its data: the backup only read"
                    f" them; no backup was kept ({self.directory} was removed)",
                    next_command=f"see why with `{render(argv)} > /dev/null`, then run the"
                    " same command again",
                )
        meter.end(follower.count)
        return follower.hexdigest()

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Discard the directory on any failure; name it in a Docker or full-disk error."""
        try:
            yield
        except BaseException as exc:
            self.discard()
            if isinstance(exc, OSError) and exc.errno in FULL_ERRNOS:
                raise self._no_space(exc) from None
            if engine_failed(exc):
                raise ReleaseError(
                    f"backup of {self.deployed.service} into {self.directory} failed: the"
                    f" Docker Engine did not answer or refused: {exc}",
                    untouched=f"the service and its data; nothing was kept in {self.directory}",
                    next_command="check the engine (`docker info`), then run the same"
                    f" command again; {self.deployed.compose('ps')}",
                ) from None
            raise

    def _no_space(self, exc: OSError) -> ReleaseError:
        """A full disk (or quota), said with what is known: written so far, free now.

        What the whole backup needs is not known (the engine streams an archive
        without its size), but more than is free once the partial one is gone.
        """
        where = self.directory.parent
        # Its nearest directory that exists: a full disk may have refused `where` itself.
        existing = next(d for d in (where, *where.parents) if d.exists())
        free = shutil.disk_usage(existing).free
        said = "disk quota exceeded" if exc.errno == errno.EDQUOT else "no space left on device"
        needs = progress.size(max(free, self.written))
        filled = (
            f"it filled after {progress.size(self.written)} had been written"
            if self.written
            else "it was full before anything was written"
        )
        return ReleaseError(
            f"backup of {self.deployed.service} into {self.directory} failed: {said} on"
            f" the filesystem of {where}: {filled}; with the partial backup removed"
            f" {progress.size(free)} is free there, and the backup needs more than {needs}",
            untouched=(
                f"{self.deployed.service} and its data: the backup only read them; no"
                f" backup was kept ({self.directory} was removed)"
            ),
            # The backup filled what was free: as much again is the least that could do.
            next_command=f"make more than {needs} free on the filesystem of {where}, where"
            f" {progress.size(free)} is free now (`df -h {where}`)",
        )


def write_backup(
    deployed: Deployed, sources: list[Source], directory: Path, stamp: str, *, note: str
) -> BackupRecord:
    """Archive ``sources`` into ``directory``; a directory with a record is complete."""
    writer = Writer(deployed, directory, stamp, note=note)
    began = time.monotonic()
    with writer.guard():
        for number, source in enumerate(sources, start=1):
            writer.add(number, source)
        record = writer.finish()
    files = len(record.archives)
    if files:  # a service that declares nothing to save has nothing to tell
        progress.say(
            deployed.service,
            f"backup {stamp}: {progress.size(writer.written)} in {files}"
            f" file{'' if files == 1 else 's'}, {time.monotonic() - began:.1f} s",
        )
    return record


def _archive(writer: Writer, source: Source, archive: str) -> Entry:
    """Archive one source into the writer's ``archive``; an absent one gets no file."""
    deployed = writer.deployed
    if source.kind == "volume":
        if source.volume is None:
            return Entry("volume", source.name, source.target, absent=True)
        local = readable_directory(source.volume.attrs, os.environ.get("DOCKER_HOST"))
        if local is not None:
            # The same archive as the API's, made where the files are: tar reads them
            # from the host's page cache instead of the daemon streaming them over its
            # socket, about twice as fast for a large volume (bench/backup.py).
            sha = writer.save_output(
                archive_argv(local, VOLUME_MOUNT.lstrip("/")), archive, f"volume {source.name}"
            )
        else:
            image = _require_image(deployed, source.target)
            with helper(deployed, image, source.target, read_only=True) as mounted:
                chunks, _ = mounted.get_archive(VOLUME_MOUNT)
                sha = writer.save(chunks, archive, f"volume {source.name}")
        config = VolumeConfig.of(source.volume)
        return Entry("volume", source.name, source.target, False, archive, sha, volume=config)
    container = source.container
    if container is None:
        return Entry("path", source.name, source.target, absent=True)
    try:
        chunks, _ = container.get_archive(source.target)
    except docker.errors.NotFound:
        if source.missing_ok:
            return Entry("path", source.name, source.target, absent=True)
        raise ReleaseError(
            f"backup of {deployed.service}: path {source.target} does not exist"
            f" in {container.name}",
            untouched=f"everything: no backup was written for {deployed.service}",
            next_command=(
                f"fix backup.paths in {deployed.source}, or create"
                f" it: docker exec {container.name} mkdir -p {source.target}"
            ),
        ) from None
    sha = writer.save(chunks, archive, f"path {source.target}")
    return Entry("path", source.name, source.target, False, archive, sha, str(container.name))


def _dump(writer: Writer, source: Source, name: str) -> Entry:
    """Run the dump with its stdout going straight into the writer's ``name``.

    The dump never passes through this process: a database's dump may be larger
    than its memory. It appears under its name only once it is complete: a dump
    that fails, times out or writes nothing leaves no file behind. A dump that
    failed while the backup's filesystem is full failed for that (it is Compose
    that writes the file, and says so only in its own words): the writer names it.
    """
    deployed, directory = writer.deployed, writer.directory
    dump = source.dump
    assert dump is not None
    container = source.container
    if container is None:
        return Entry("dump", source.name, source.target, absent=True, dump=dump)
    argv = deployed.project.exec(source.target, dump.command)
    path = directory / name
    with atomic.replacing(path) as tmp:
        meter = progress.Meter(deployed.service, "dump", verb="streamed")
        # The dump's bytes go from compose to the file without passing through here:
        # the file's size says how far it got.
        with progress.ticking(lambda: meter.update(_size_of(tmp)), seconds=1.0):
            result = deployed.host.run(argv, timeout=source.timeout, check=False, stdout_to=tmp)
        if not result.ok and shutil.disk_usage(directory).free < FULL:
            writer.written += tmp.stat().st_size
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))
        if result.timed_out:
            # Killing `compose exec` ends the client, not the process in the container.
            how = f"timed out after {result.duration:.0f}s (it may still run in {container.name})"
        elif not result.ok:
            how = f"exited {result.returncode}"
        elif tmp.stat().st_size == 0:
            how = "exited 0 but wrote nothing"
        else:
            how = ""
        if how:
            stderr = result.tail(20).strip()
            raise ReleaseError(
                f"dump of {deployed.service} failed: `{render(argv)}` {how}"
                + (f"; it said:\n{stderr}" if stderr else " and said nothing on stderr"),
                untouched=(
                    f"{deployed.service} and its data: nothing was stopped or changed;"
                    f" no backup was kept ({directory} was removed)"
                ),
                next_command=(
                    f"see why with `{render(argv)} > /dev/null`; fix the service"
                    f" (or backup.dump.command in {deployed.source})"
                ),
                rc=result.returncode if result.returncode > 0 else 1,
            )
    writer.written += path.stat().st_size
    meter.end(path.stat().st_size, always=True)
    sha = sha256_file(path)
    held = str(container.name)
    return Entry("dump", source.name, source.target, False, name, sha, held, dump=dump)


def _require_image(deployed: Deployed, volume: str) -> str:
    image = deployed.helper_image()
    if image is None:
        raise ReleaseError(
            f"backup of {deployed.service}: no local image to mount volume {volume} in"
            f" (no container, and {deployed.manifest.image.ref} is not local)",
            untouched=f"everything: no backup was written for {deployed.service}",
            next_command=f"docker pull {deployed.manifest.image.ref}, then rerun",
        )
    return image


def _size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:  # not there yet, or gone: nothing to tell
        return 0


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "root"


class _Follower:
    """Checksums a file while another process is still writing it (see `save_output`)."""

    def __init__(self, path: Path, meter: progress.Meter) -> None:
        self.path = path
        self.meter = meter
        self.count = 0
        self.digest = hashlib.sha256()
        self.ended = threading.Event()
        self.failed: OSError | None = None
        self.thread = threading.Thread(target=self._follow, name=f"sha256 {path.name}")

    def __enter__(self) -> _Follower:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.ended.set()
        self.thread.join()
        if self.failed is not None:
            raise self.failed

    def hexdigest(self) -> str:
        return self.digest.hexdigest()

    def _follow(self) -> None:
        try:
            with self.path.open("rb") as fh:
                while True:
                    chunk = fh.read(FOLLOW_CHUNK)
                    if chunk:
                        self.digest.update(chunk)
                        # Start writing what was read to disk now, beside tar, rather
                        # than all of it in the fsync at the end (bench/backup.py).
                        os.posix_fadvise(
                            fh.fileno(), self.count, len(chunk), os.POSIX_FADV_DONTNEED
                        )
                        self.count += len(chunk)
                        self.meter.update(self.count)
                    elif self.ended.is_set():
                        # The writer is gone: what is left was read above, to the end.
                        return
                    else:
                        self.ended.wait(FOLLOW_PAUSE)
        except OSError as exc:
            self.failed = exc
