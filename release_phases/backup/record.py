"""A backup on disk: its record, its checksums, and checking that they agree."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from release_phases.errors import ReleaseError
from release_phases.manifest import Dump

if TYPE_CHECKING:
    import docker
    from docker.models.volumes import Volume

RECORD_NAME = "record.json"
SUMS_NAME = "SHA256SUMS"
RECORD_FORMAT = 1

STAMP = re.compile(r"\d{8}_\d{6}")
# A set-aside copy is a backup too, found under the backup it was set aside for.
ANY_STAMP = re.compile(r"\d{8}_\d{6}(/replaced-\d{8}_\d{6})*")
#: The name of a set-aside, inside the backup it was restored from.
REPLACED = re.compile(r"replaced-\d{8}_\d{6}")

NOTHING_RESTORED = "the service and its data: nothing was restored"


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


#: What an entry can be: a volume or a path archived with tar, or a dump (the stdout
#: of a command in the service, restored by feeding it to another).
KINDS = ("volume", "path", "dump")


@dataclass(frozen=True)
class Entry:
    """One declared volume, path or dump, and what the backup holds for it.

    ``target`` is the Docker volume name, the path in the container, or for a dump
    the compose service it ran in. An absent entry has no archive: nothing stood
    there (for a dump: no container ran), and restoring it means nothing should.
    """

    kind: str  # one of KINDS
    name: str  # as written in the manifest (a dump: its command, rendered)
    target: str
    absent: bool
    archive: str | None = None
    sha256: str | None = None
    container: str = ""  # path and dump entries: the container it was read from
    volume: VolumeConfig | None = None
    #: A dump's command and the restore that reads it back, as they were when it was
    #: taken; a revert uses them when the manifest it restores with declares no dump.
    dump: Dump | None = None

    @property
    def label(self) -> str:
        if self.kind == "dump":
            return f"dump `{self.name}` in {self.target}"
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
                untouched=NOTHING_RESTORED,
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
                untouched=NOTHING_RESTORED,
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
    if kind not in KINDS:
        raise ValueError(f"entry kind {kind!r} is not one of {', '.join(KINDS)}")
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
    dump = data.get("dump")
    if (kind == "dump") != (dump is not None):
        raise ValueError(f"entry {name}: a dump entry, and only one, has its dump commands")
    return Entry(
        kind=kind,
        name=name,
        target=target,
        absent=absent,
        archive=archive,
        sha256=sha256,
        container=str(data.get("container", "")),
        volume=VolumeConfig(**volume) if volume is not None else None,
        dump=None if dump is None else _dump_from_json(name, dump),
    )


def _dump_from_json(name: str, data: dict[str, Any]) -> Dump:
    argvs = []
    for key in ("command", "restore"):
        argv = data[key]
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise ValueError(f"entry {name}: dump {key} {argv!r} is not an argv list")
        argvs.append(tuple(argv))
    return Dump(command=argvs[0], restore=argvs[1])


@dataclass(frozen=True)
class RestoreReport:
    record: BackupRecord  # what was restored
    replaced: BackupRecord  # what stood there before; restore its stamp to undo
    actions: tuple[str, ...]  # one line per entry, for the log

    @property
    def undo_stamp(self) -> str:
        return self.replaced.stamp


# -- checking a backup -----------------------------------------------------------------


def verify(root: Path, service: str, stamp: str) -> BackupRecord:
    """Check record.json, SHA256SUMS and every archive agree; raise naming what does not."""
    if not ANY_STAMP.fullmatch(stamp):
        raise ReleaseError(
            f"backup stamp {stamp!r} is not YYYYmmdd_HHMMSS (or <stamp>/replaced-<stamp>)",
            untouched=NOTHING_RESTORED,
            next_command=f"list the backups: ls {root / service}",
        )
    directory = root / service / stamp
    record = BackupRecord.load(directory, service, stamp)
    sums = _read_sums(directory)
    check = f"cd {directory} && sha256sum -c {SUMS_NAME}"
    for entry in record.archives:
        assert entry.archive is not None
        path = directory / entry.archive
        if sums.pop(entry.archive, None) != entry.sha256:
            raise ReleaseError(
                f"backup {directory}: {SUMS_NAME} and {RECORD_NAME} disagree about"
                f" archive {entry.archive}",
                untouched=NOTHING_RESTORED,
                next_command=check,
            )
        if not path.is_file():
            raise ReleaseError(
                f"backup {directory}: archive {entry.archive} is missing",
                untouched=NOTHING_RESTORED,
                next_command=f"pick another backup: ls {directory.parent}",
            )
        actual = sha256_file(path)
        if actual != entry.sha256:
            raise ReleaseError(
                f"backup {directory}: archive {entry.archive} is corrupted"
                f" (sha256 {actual}, recorded {entry.sha256})",
                untouched=NOTHING_RESTORED,
                next_command=check,
            )
    if sums:
        raise ReleaseError(
            f"backup {directory}: {SUMS_NAME} lists {', '.join(sorted(sums))},"
            f" which {RECORD_NAME} does not",
            untouched=NOTHING_RESTORED,
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
            untouched=NOTHING_RESTORED,
            next_command=f"pick another backup: ls {directory.parent}",
        ) from None
    sums = {}
    for line in lines:
        match = re.fullmatch(r"([0-9a-f]{64}) [ *](\S.*)", line)
        if match is None:
            raise ReleaseError(
                f"backup {directory}: {SUMS_NAME} has a malformed line {line!r}",
                untouched=NOTHING_RESTORED,
                next_command=f"cd {directory} && sha256sum -c {SUMS_NAME}",
            )
        sums[match[2]] = match[1]
    return sums


def sha256_of(fh: IO[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: fh.read(1 << 20), b""):
        digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    with path.open("rb") as fh:
        return sha256_of(fh)


def incomplete(root: Path) -> list[Path]:
    """Backup directories under ``root`` without a record: half backups (or half
    set-asides) that a run killed while writing them never got to remove.

    Only a run holding the lock may act on this: a directory being written right
    now has no record yet either.
    """
    found: list[Path] = []

    def walk(directory: Path, pattern: re.Pattern[str]) -> None:
        for child in sorted(directory.iterdir()):
            if not child.is_dir() or child.is_symlink() or not pattern.fullmatch(child.name):
                continue
            if (child / RECORD_NAME).is_file():
                walk(child, REPLACED)  # a restore's set-aside lives inside its backup
            else:
                found.append(child)

    if root.is_dir():
        for service in sorted(root.iterdir()):
            if service.is_dir() and not service.is_symlink():
                walk(service, STAMP)
    return found
