"""Backups of a service's data: named Docker volumes and paths in its first container.

Phase 1 calls ``take``; a revert calls ``restore``; ``verify`` checks a backup on disk.
Everything goes through the Docker API (``get_archive``/``put_archive``), never through
the host's ``/var/lib/docker``, so the same code works against any engine.

On disk, under ``root`` (``backups_root(repo)`` is ``<repo>/.asd/workspace/backups``)::

    <service>/<stamp>/                  stamp is YYYYmmdd_HHMMSS, UTC
        01-volume-web-data.tar          one tar per entry that existed
        02-path-srv-data.tar
        SHA256SUMS                      `sha256sum -c SHA256SUMS` checks the archives
                                        (empty when nothing was archived)
        record.json                     written last: its presence means "complete"
        replaced-<now>/                 what stood there before a restore, same layout

A ``replaced-<now>`` directory is itself a backup whose stamp is
``<stamp>/replaced-<now>``: restoring that stamp undoes the revert.

How data is read and written:

- A volume is mounted into a throwaway container that is created but never started
  (image: the service's current container's, else the manifest image if it is
  local), and archived with ``get_archive``. To restore, the volume is emptied and
  the archive is put back with ``put_archive``. Emptying is exact either way: a
  volume that no container holds is removed and recreated with the same name,
  driver, options and labels; a volume still held by the service's *stopped*
  containers cannot be removed, so a throwaway container from the service's image
  is *started* once to run ``rm -rf`` on the volume's top-level entries.
- A path is archived from the service's first container. To restore, the path is
  first replaced by an empty file (``put_archive`` removes a directory it replaces
  with a non-directory), then the archive is put back. This works on a stopped
  container, so a restore never starts the service.
- After restoring, each target is archived again and compared member by member
  (name, type, mode, owner, mtime, link target, size and sha256 of the content)
  with the backup; the backup's own checksums are verified before anything is
  touched.

Limitations, stated plainly:

- A path is restored into the writable layer of the container that exists at
  restore time. A container that compose later *recreates* (a new image, a changed
  compose file) starts from its image again, so the restored path is lost unless it
  lies on a mount. Paths that need to survive a revert belong on a volume.
- A path that is, or contains, a mount point is refused at backup time: replacing
  it would reach into the mount. Declare the volume under ``backup.volumes``.
- Emptying a volume held by stopped containers needs ``rm`` in the service's image.
  When the image has none (distroless), the restore fails before writing anything
  and says to remove the stopped containers so the volume can be recreated.
- A path that was recorded absent (no container at backup time, a first release)
  is left as it is on restore: a stopped container's file cannot be removed
  without leaving something in its place. The container itself goes when the
  previous state (no service) is brought back.
- Nothing is restored while a container that uses a target is running, and a
  backup of a running service is only as consistent as the files are at that
  moment (no snapshot).
- Stamps have one-second resolution: a second ``take`` of a service within the same
  second fails rather than overwrite; a set-aside waits for the next second.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import re
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import docker
import docker.errors
from docker.models.containers import Container
from docker.models.volumes import Volume
from docker.types import Mount

from release_phases import atomic
from release_phases.errors import ReleaseError
from release_phases.host.shell import render
from release_phases.manifest import Manifest

HELPER_LABEL = "io.release-phases.helper"
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
NUMBER_LABEL = "com.docker.compose.container-number"

RECORD_NAME = "record.json"
SUMS_NAME = "SHA256SUMS"
STAMP_FORMAT = "%Y%m%d_%H%M%S"
RECORD_FORMAT = 1

# Where a throwaway container mounts the volume; also the archive's top-level name.
VOLUME_MOUNT = "/release-phases-volume"
# A throwaway container is never started, except to empty a volume; this entrypoint
# only satisfies "a container needs a command" for images that declare none.
NEVER_STARTED = ["release-phases-helper-is-never-started"]
STOPPED_STATES = frozenset({"created", "exited", "dead"})

_STAMP = re.compile(r"\d{8}_\d{6}")
# A set-aside copy is a backup too, found under the backup it was set aside for.
_ANY_STAMP = re.compile(r"\d{8}_\d{6}(/replaced-\d{8}_\d{6})*")


def backups_root(repo: Path) -> Path:
    """Where every service's backups live in a deploy repository."""
    return repo / ".asd" / "workspace" / "backups"


def new_stamp() -> str:
    return datetime.now(UTC).strftime(STAMP_FORMAT)


# -- the record ------------------------------------------------------------------------


@dataclass(frozen=True)
class VolumeConfig:
    """What is needed to create a volume again as it was."""

    driver: str = "local"
    options: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, volume: Volume) -> VolumeConfig:
        attrs = volume.attrs
        return cls(
            driver=attrs.get("Driver") or "local",
            options=attrs.get("Options") or {},
            labels=attrs.get("Labels") or {},
        )

    def create(self, client: docker.DockerClient, name: str) -> None:
        client.volumes.create(
            name=name,
            driver=self.driver,
            driver_opts=self.options or None,
            labels=self.labels or None,
        )


@dataclass(frozen=True)
class Entry:
    """One declared volume or path, and what the backup holds for it.

    ``target`` is the Docker volume name or the path in the container. An absent
    entry has no archive: nothing stood there, and restoring it means nothing should.
    """

    kind: str  # "volume" | "path"
    name: str  # as written in the manifest
    target: str
    absent: bool
    archive: str | None = None
    sha256: str | None = None
    container: str = ""  # path entries: the container it was read from
    volume: VolumeConfig | None = None

    @property
    def label(self) -> str:
        where = f" ({self.target})" if self.target != self.name else ""
        return f"{self.kind} {self.name}{where}"


@dataclass(frozen=True)
class BackupRecord:
    service: str
    stamp: str
    directory: Path
    entries: tuple[Entry, ...]
    project: str = ""
    taken_at: str = ""
    note: str = ""

    def describe(self) -> str:
        """One line per entry, for the report."""
        if not self.entries:
            return f"{self.service} {self.stamp}: nothing declared, empty record"
        lines = [f"{self.service} {self.stamp} in {self.directory}"]
        for e in self.entries:
            held = "absent (nothing to save)" if e.absent else f"{e.archive} sha256 {e.sha256}"
            lines.append(f"  {e.label}: {held}")
        return "\n".join(lines)

    @property
    def nothing_declared(self) -> bool:
        return not self.entries

    @property
    def archives(self) -> tuple[Entry, ...]:
        return tuple(e for e in self.entries if not e.absent)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": RECORD_FORMAT,
            "service": self.service,
            "stamp": self.stamp,
            "project": self.project,
            "taken_at": self.taken_at,
            "note": self.note,
            "nothing_declared": self.nothing_declared,
            "entries": [asdict(e) for e in self.entries],
        }

    @classmethod
    def load(cls, directory: Path, service: str, stamp: str) -> BackupRecord:
        """Read ``record.json``, trusting nothing in it."""
        path = directory / RECORD_NAME
        if not path.is_file():
            raise ReleaseError(
                f"backup {directory} is incomplete or missing: it has no {RECORD_NAME}",
                untouched="the service and its data: nothing was restored",
                next_command=f"pick a complete backup: ls {directory.parent}/*/{RECORD_NAME}",
            )
        try:
            data = json.loads(path.read_text())
            if data.get("format") != RECORD_FORMAT:
                raise ValueError(f"format is {data.get('format')!r}, expected {RECORD_FORMAT}")
            if data.get("service") != service or data.get("stamp") != stamp:
                raise ValueError(
                    f"it describes {data.get('service')!r} at {data.get('stamp')!r},"
                    f" not {service!r} at {stamp!r}"
                )
            entries = tuple(_entry_from_json(e) for e in data["entries"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ReleaseError(
                f"backup record {path} is unreadable: {exc}",
                untouched="the service and its data: nothing was restored",
                next_command=f"pick another backup: ls {directory.parent}",
            ) from None
        return cls(
            service=service,
            stamp=stamp,
            directory=directory,
            entries=entries,
            project=str(data.get("project", "")),
            taken_at=str(data.get("taken_at", "")),
            note=str(data.get("note", "")),
        )


def _entry_from_json(data: dict[str, Any]) -> Entry:
    kind, name, target = data["kind"], data["name"], data["target"]
    if kind not in ("volume", "path"):
        raise ValueError(f"entry kind {kind!r} is neither 'volume' nor 'path'")
    if not all(isinstance(v, str) and v for v in (name, target)):
        raise ValueError(f"entry {data!r} lacks a name or target")
    absent = data["absent"]
    archive, sha256 = data.get("archive"), data.get("sha256")
    if not isinstance(absent, bool):
        raise ValueError(f"entry {name}: absent must be true or false")
    if absent != (archive is None) or absent != (sha256 is None):
        raise ValueError(f"entry {name}: an archive and its sha256 go with absent=false")
    if archive is not None and (not isinstance(archive, str) or "/" in archive or not archive):
        raise ValueError(f"entry {name}: archive {archive!r} is not a file name")
    if sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", str(sha256)):
        raise ValueError(f"entry {name}: sha256 {sha256!r} is not a sha256")
    volume = data.get("volume")
    return Entry(
        kind=kind,
        name=name,
        target=target,
        absent=absent,
        archive=archive,
        sha256=sha256,
        container=str(data.get("container", "")),
        volume=VolumeConfig(**volume) if volume is not None else None,
    )


@dataclass(frozen=True)
class RestoreReport:
    record: BackupRecord  # what was restored
    replaced: BackupRecord  # what stood there before; restore its stamp to undo
    actions: tuple[str, ...]  # one line per entry, for the log

    @property
    def undo_stamp(self) -> str:
        return self.replaced.stamp


# -- what runs now ---------------------------------------------------------------------


class _Deployed:
    """The service as the Docker Engine sees it now, found by compose labels."""

    def __init__(self, client: docker.DockerClient, manifest: Manifest, project: str) -> None:
        self.client = client
        self.manifest = manifest
        self.project = project

    @property
    def service(self) -> str:
        return self.manifest.service

    def compose(self, *args: str) -> str:
        """An operator's compose command for this service."""
        return render(
            ["docker", "compose", "-p", self.project, "-f", str(self.manifest.compose_file), *args]
        )

    def containers(self) -> list[Container]:
        found = self.client.containers.list(
            all=True, filters={"label": f"{PROJECT_LABEL}={self.project}"}
        )
        return [c for c in found if c.labels.get(SERVICE_LABEL) in self.manifest.containers]

    def first_container(self) -> Container | None:
        first = self.manifest.containers[0]
        mine = [c for c in self.containers() if c.labels.get(SERVICE_LABEL) == first]
        mine.sort(key=lambda c: (int(c.labels.get(NUMBER_LABEL, "0") or 0), c.name))
        return mine[0] if mine else None

    def volume(self, name: str) -> Volume | None:
        try:
            return self.client.volumes.get(name)
        except docker.errors.NotFound:
            return None

    def resolve(self, key: str) -> Volume | None:
        """Compose names a volume `<project>_<key>`, or `<key>` when it is external."""
        return self.volume(project_volume(self.project, key)) or self.volume(key)

    def users(self, volume: str) -> list[Container]:
        """Containers that mount the volume, other than our own throwaway ones."""
        found = self.client.containers.list(all=True, filters={"volume": volume})
        return [c for c in found if HELPER_LABEL not in c.labels]

    def stale_helpers(self, volume: str) -> list[Container]:
        return self.client.containers.list(
            all=True, filters={"volume": volume, "label": f"{HELPER_LABEL}=1"}
        )

    def helper_image(self) -> str | None:
        """An image that is surely local: the current container's, else the manifest's."""
        current = self.first_container()
        if current is not None:
            return current.attrs["Image"]
        try:
            return self.client.images.get(self.manifest.image.ref).id
        except docker.errors.ImageNotFound:
            return None


@contextmanager
def _helper(
    deployed: _Deployed, image: str, volume: str, *, read_only: bool
) -> Iterator[Container]:
    """A created, never started container with the volume at VOLUME_MOUNT."""
    container = deployed.client.containers.create(
        image,
        entrypoint=NEVER_STARTED,
        labels={HELPER_LABEL: "1"},
        network_mode="none",
        mounts=[Mount(VOLUME_MOUNT, volume, type="volume", read_only=read_only, no_copy=True)],
    )
    try:
        yield container
    finally:
        container.remove(force=True)


# -- writing a backup ------------------------------------------------------------------


@dataclass
class _Source:
    """One thing to archive, resolved against what runs now."""

    kind: str
    name: str
    target: str
    volume: Volume | None = None
    container: Container | None = None
    missing_ok: bool = False  # a path missing from the container is recorded absent


def take(
    client: docker.DockerClient,
    manifest: Manifest,
    project: str,
    root: Path,
    stamp: str | None = None,
) -> BackupRecord:
    """Archive the service's declared volumes and paths under ``root/<service>/<stamp>``."""
    deployed = _Deployed(client, manifest, project)
    stamp = stamp or new_stamp()
    if not _STAMP.fullmatch(stamp):
        raise ReleaseError(
            f"backup stamp {stamp!r} is not YYYYmmdd_HHMMSS",
            untouched=f"everything: no backup was written for {manifest.service}",
            next_command="rerun without a stamp, or give one like 20240131_235959",
        )
    directory = root / manifest.service / stamp
    sources = _plan(deployed) if not manifest.backup.empty else []
    return _write_backup(deployed, sources, directory, stamp, note="taken before a release")


def _plan(deployed: _Deployed) -> list[_Source]:
    """Resolve every declared volume and path, failing before anything is written."""
    manifest = deployed.manifest
    containers = deployed.containers()
    sources = []
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
                f" (neither {project_volume(deployed.project, key)!r} nor {key!r}),"
                f" yet the service is deployed ({', '.join(c.name for c in containers)})",
                untouched=f"everything: no backup was written for {manifest.service}",
                next_command=(
                    f"check backup.volumes in {manifest.source or 'the manifest'} against"
                    " `docker volume ls`; if the volume is new in this release, create it"
                    " first: " + render(_volume_create_argv(deployed.project, key))
                ),
            )
        target = volume.name if volume else project_volume(deployed.project, key)
        sources.append(_Source("volume", key, target, volume=volume))
    first = deployed.first_container()
    for declared in manifest.backup.paths:
        path = _clean_path(deployed, declared)
        if first is not None:
            _refuse_mounts(deployed, first, path)
        sources.append(_Source("path", declared, path, container=first))
    return sources


def project_volume(project: str, key: str) -> str:
    return f"{project}_{key}"


def _volume_create_argv(project: str, key: str) -> list[str]:
    """Create a volume as compose would, labelled so that compose adopts it."""
    return [
        "docker",
        "volume",
        "create",
        f"--label={PROJECT_LABEL}={project}",
        f"--label=com.docker.compose.volume={key}",
        project_volume(project, key),
    ]


def _clean_path(deployed: _Deployed, declared: str) -> str:
    path = posixpath.normpath(declared)
    if not path.startswith("/") or path == "/":
        raise ReleaseError(
            f"backup of {deployed.service}: path {declared!r} must be absolute and not /",
            untouched=f"everything: no backup was written for {deployed.service}",
            next_command=f"fix backup.paths in {deployed.manifest.source or 'the manifest'}",
        )
    return path


def _refuse_mounts(deployed: _Deployed, container: Container, path: str) -> None:
    for mount in container.attrs.get("Mounts") or []:
        dest = mount.get("Destination", "")
        if dest == path or dest.startswith(path + "/"):
            raise ReleaseError(
                f"backup of {deployed.service}: path {path} in {container.name} is or holds"
                f" the mount point {dest}; restoring it would reach into the mount",
                untouched=f"everything: no backup was written for {deployed.service}",
                next_command=(
                    f"in {deployed.manifest.source or 'the manifest'}, declare the volume"
                    f" under backup.volumes and list only paths without mounts"
                ),
            )


def _write_backup(
    deployed: _Deployed, sources: list[_Source], directory: Path, stamp: str, *, note: str
) -> BackupRecord:
    if directory.exists():
        raise ReleaseError(
            f"backup directory {directory} already exists",
            untouched=f"{directory} and the service: nothing was written",
            next_command="wait a second and rerun (stamps have one-second resolution)",
        )
    directory.mkdir(parents=True)
    try:
        entries = tuple(
            _archive(deployed, source, directory, f"{i:02d}-{source.kind}-{_slug(source.name)}.tar")
            for i, source in enumerate(sources, start=1)
        )
        record = BackupRecord(
            service=deployed.service,
            stamp=stamp,
            directory=directory,
            entries=entries,
            project=deployed.project,
            taken_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            note=note,
        )
        sums = "".join(f"{e.sha256}  {e.archive}\n" for e in record.archives)
        atomic.write(directory / SUMS_NAME, [sums.encode()])
        # Last: a directory with a record is a complete backup.
        text = json.dumps(record.to_json(), indent=2) + "\n"
        atomic.write(directory / RECORD_NAME, [text.encode()])
    except BaseException as exc:
        # Only what this call created goes: a half backup must not look like one.
        shutil.rmtree(directory, ignore_errors=True)
        if isinstance(exc, docker.errors.APIError):
            raise ReleaseError(
                f"backup of {deployed.service} into {directory} failed: {exc}",
                untouched=f"the service and its data; nothing was kept in {directory}",
                next_command=f"fix the cause, then rerun; {deployed.compose('ps')}",
            ) from None
        raise
    return record


def _archive(deployed: _Deployed, source: _Source, directory: Path, archive: str) -> Entry:
    """Archive one source into ``directory / archive``; an absent one gets no file."""
    if source.kind == "volume":
        if source.volume is None:
            return Entry("volume", source.name, source.target, absent=True)
        image = _require_image(deployed, source.target)
        with _helper(deployed, image, source.target, read_only=True) as helper:
            chunks, _ = helper.get_archive(VOLUME_MOUNT)
            sha = atomic.write(directory / archive, chunks)
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
                f"fix backup.paths in {deployed.manifest.source or 'the manifest'}, or create"
                f" it: docker exec {container.name} mkdir -p {source.target}"
            ),
        ) from None
    sha = atomic.write(directory / archive, chunks)
    return Entry("path", source.name, source.target, False, archive, sha, container.name)


def _require_image(deployed: _Deployed, volume: str) -> str:
    image = deployed.helper_image()
    if image is None:
        raise ReleaseError(
            f"backup of {deployed.service}: no local image to mount volume {volume} in"
            f" (no container, and {deployed.manifest.image.ref} is not local)",
            untouched=f"everything: no backup was written for {deployed.service}",
            next_command=f"docker pull {deployed.manifest.image.ref}, then rerun",
        )
    return image


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "root"


# -- checking a backup -----------------------------------------------------------------


def verify(root: Path, service: str, stamp: str) -> BackupRecord:
    """Check record.json, SHA256SUMS and every archive agree; raise naming what does not."""
    if not _ANY_STAMP.fullmatch(stamp):
        raise ReleaseError(
            f"backup stamp {stamp!r} is not YYYYmmdd_HHMMSS (or <stamp>/replaced-<stamp>)",
            untouched="the service and its data: nothing was restored",
            next_command=f"list the backups: ls {root / service}",
        )
    directory = root / service / stamp
    record = BackupRecord.load(directory, service, stamp)
    sums = _read_sums(directory)
    untouched = "the service and its data: nothing was restored"
    check = f"cd {directory} && sha256sum -c {SUMS_NAME}"
    for entry in record.archives:
        assert entry.archive is not None
        path = directory / entry.archive
        if sums.pop(entry.archive, None) != entry.sha256:
            raise ReleaseError(
                f"backup {directory}: {SUMS_NAME} and {RECORD_NAME} disagree about"
                f" archive {entry.archive}",
                untouched=untouched,
                next_command=check,
            )
        if not path.is_file():
            raise ReleaseError(
                f"backup {directory}: archive {entry.archive} is missing",
                untouched=untouched,
                next_command=f"pick another backup: ls {directory.parent}",
            )
        actual = _sha256_file(path)
        if actual != entry.sha256:
            raise ReleaseError(
                f"backup {directory}: archive {entry.archive} is corrupted"
                f" (sha256 {actual}, recorded {entry.sha256})",
                untouched=untouched,
                next_command=check,
            )
    if sums:
        raise ReleaseError(
            f"backup {directory}: {SUMS_NAME} lists {', '.join(sorted(sums))},"
            f" which {RECORD_NAME} does not",
            untouched=untouched,
            next_command=check,
        )
    return record


def _read_sums(directory: Path) -> dict[str, str]:
    path = directory / SUMS_NAME
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ReleaseError(
            f"backup {directory}: cannot read {SUMS_NAME}: {exc.strerror}",
            untouched="the service and its data: nothing was restored",
            next_command=f"pick another backup: ls {directory.parent}",
        ) from None
    sums = {}
    for line in lines:
        match = re.fullmatch(r"([0-9a-f]{64}) [ *](\S.*)", line)
        if match is None:
            raise ReleaseError(
                f"backup {directory}: {SUMS_NAME} has a malformed line {line!r}",
                untouched="the service and its data: nothing was restored",
                next_command=f"cd {directory} && sha256sum -c {SUMS_NAME}",
            )
        sums[match[2]] = match[1]
    return sums


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# -- restoring -------------------------------------------------------------------------


def restore(
    client: docker.DockerClient,
    manifest: Manifest,
    project: str,
    root: Path,
    stamp: str,
) -> RestoreReport:
    """Put a verified backup back, after archiving what stood there; verify the result."""
    deployed = _Deployed(client, manifest, project)
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
            _check_restored(deployed, record, entry, first, undo)
        except docker.errors.APIError as exc:
            raise ReleaseError(
                f"restore of {manifest.service} {entry.label} from {stamp} failed: {exc}",
                untouched=undo,
                next_command=f"fix the cause, then rerun the revert; {deployed.compose('ps')}",
            ) from None
        actions.append(action)
    return RestoreReport(record=record, replaced=replaced, actions=tuple(actions))


def _preflight(deployed: _Deployed, record: BackupRecord, first: Container | None) -> None:
    """Refuse, before touching anything, what the restore could not finish."""
    untouched = "the service and its data: nothing was restored"
    for entry in record.entries:
        if entry.kind == "volume":
            volume = _current_volume(deployed, entry)
            running = [
                c.name
                for c in (deployed.users(volume.name) if volume else [])
                if c.status not in STOPPED_STATES
            ]
            if running:
                raise ReleaseError(
                    f"cannot restore {deployed.service} {entry.label}: it is in use by"
                    f" running {', '.join(running)}",
                    untouched=untouched,
                    next_command=f"stop them first: {deployed.compose('stop')}",
                )
        elif not entry.absent:
            if first is None:
                raise ReleaseError(
                    f"cannot restore {deployed.service} {entry.label}: no container of"
                    f" {deployed.manifest.containers[0]} exists to restore it into",
                    untouched=untouched,
                    next_command=f"create it without starting it: {deployed.compose('create')}",
                )
            if first.status not in STOPPED_STATES:
                raise ReleaseError(
                    f"cannot restore {deployed.service} {entry.label}: {first.name} is"
                    f" {first.status}",
                    untouched=untouched,
                    next_command=f"stop it first: {deployed.compose('stop')}",
                )
            _refuse_mounts(deployed, first, entry.target)
    if any(e.kind == "volume" for e in record.entries) and deployed.helper_image() is None:
        raise ReleaseError(
            f"cannot restore {deployed.service}: no local image to mount volumes in"
            f" (no container, and {deployed.manifest.image.ref} is not local)",
            untouched=untouched,
            next_command=f"docker pull {deployed.manifest.image.ref}, then rerun the revert",
        )


def _current_volume(deployed: _Deployed, entry: Entry) -> Volume | None:
    """The volume an entry restores into: the recorded one, else resolve the key again."""
    return deployed.volume(entry.target) or (deployed.resolve(entry.name) if entry.absent else None)


def _set_aside(deployed: _Deployed, record: BackupRecord, first: Container | None) -> BackupRecord:
    """Archive what stands there now, as a backup of its own, so the restore can be undone."""
    while True:
        now = new_stamp()
        directory = record.directory / f"replaced-{now}"
        if not directory.exists():
            break
        time.sleep(0.2)
    sources = []
    for entry in record.entries:
        if entry.kind == "volume":
            volume = _current_volume(deployed, entry)
            target = volume.name if volume else entry.target
            sources.append(_Source("volume", entry.name, target, volume=volume))
        else:
            sources.append(
                _Source("path", entry.name, entry.target, container=first, missing_ok=True)
            )
    return _write_backup(
        deployed,
        sources,
        directory,
        f"{record.stamp}/replaced-{now}",
        note=f"what stood there before restoring {record.stamp}",
    )


def _restore_volume(
    deployed: _Deployed,
    record: BackupRecord,
    entry: Entry,
    before: Entry,
    replaced: BackupRecord,
) -> str:
    volume = _current_volume(deployed, entry)
    image = deployed.helper_image()
    assert image is not None  # checked in _preflight
    if volume is not None:
        for stale in deployed.stale_helpers(volume.name):
            stale.remove(force=True)
        holders = deployed.users(volume.name)
        if holders:
            # Stopped containers still hold it, so it cannot be removed: empty it.
            _empty_in_place(deployed, image, volume.name, replaced, before, holders)
            how = f"emptied in place (held by stopped {', '.join(c.name for c in holders)})"
        else:
            config = VolumeConfig.of(volume)
            volume.remove()
            how = "removed"
            if not entry.absent:
                config.create(deployed.client, volume.name)
                how = "removed and recreated"
    else:
        how = "did not exist"
        if not entry.absent:
            assert entry.volume is not None
            entry.volume.create(deployed.client, entry.target)
            how = "did not exist; created"
    if entry.absent:
        return f"{entry.label}: absent in the backup; {how}"
    assert entry.archive is not None
    with (
        _helper(deployed, image, entry.target, read_only=False) as helper,
        (record.directory / entry.archive).open("rb") as archive,
    ):
        helper.put_archive("/", archive)
    return f"{entry.label}: {how}, restored from {entry.archive}"


def _empty_in_place(
    deployed: _Deployed,
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
    container = deployed.client.containers.create(
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
            names = " ".join(c.name for c in holders)
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


# -- checking the result ---------------------------------------------------------------

Member = tuple[str, bytes, int, int, int, int, str, int, str]


def _members(fileobj: IO[bytes]) -> list[Member]:
    """Each tar member's name, type, mode, owner, mtime, link, size and content sha256."""
    out = []
    with tarfile.open(fileobj=fileobj, mode="r|") as tar:
        for m in tar:
            digest = hashlib.sha256()
            if m.isfile():
                data = tar.extractfile(m)
                assert data is not None
                for chunk in iter(lambda d=data: d.read(1 << 20), b""):
                    digest.update(chunk)
            out.append(
                (
                    m.name,
                    m.type,
                    m.mode,
                    m.uid,
                    m.gid,
                    int(m.mtime),
                    m.linkname,
                    m.size,
                    digest.hexdigest(),
                )
            )
    return out


def _check_restored(
    deployed: _Deployed,
    record: BackupRecord,
    entry: Entry,
    first: Container | None,
    undo: str,
) -> None:
    if entry.kind == "path" and entry.absent:
        return
    if entry.kind == "volume":
        volume = _current_volume(deployed, entry)
        if volume is None:
            now = None if entry.absent else []
        else:
            image = deployed.helper_image()
            assert image is not None
            with _helper(deployed, image, volume.name, read_only=True) as helper:
                now = _spooled_members(helper.get_archive(VOLUME_MOUNT)[0])
        if entry.absent:
            # Gone, or emptied in place: only the volume's root directory is left.
            if now is None or len(now) == 1:
                return
            raise ReleaseError(
                f"restore of {deployed.service} {entry.label} from {record.stamp}: the"
                f" volume was absent then, yet {len(now) - 1} members are still in it",
                untouched=undo,
                next_command=f"inspect it: docker volume inspect {entry.target}",
            )
    else:
        assert first is not None
        now = _spooled_members(first.get_archive(entry.target)[0])
    assert entry.archive is not None
    with (record.directory / entry.archive).open("rb") as fh:
        expected = _members(fh)
    if now != expected:
        differ = sorted({m[0] for m in set(now or []) ^ set(expected)})
        raise ReleaseError(
            f"restore of {deployed.service} {entry.label} from {record.stamp} does not match"
            f" {entry.archive}: {', '.join(differ[:10]) or 'member order'} differ",
            untouched=undo,
            next_command=f"inspect {record.directory}, then rerun the revert",
        )


def _spooled_members(chunks: Iterable[bytes]) -> list[Member]:
    with tempfile.TemporaryFile() as fh:
        for chunk in chunks:
            fh.write(chunk)
        fh.seek(0)
        return _members(fh)
