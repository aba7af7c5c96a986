"""A backup on disk: its record, its checksums, and checking that they agree."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from release_phases.errors import ReleaseError
from release_phases.manifest import Dump
from release_phases.schema import NonEmptyStr, Strict, problems, summary

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

    def create(self, client: docker.DockerClient, name: str) -> Volume:
        return client.volumes.create(
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
        """Read ``record.json``, trusting nothing in it: any key it does not know, any
        value of the wrong type, a duplicated key or a cut-short file is refused."""
        path = directory / RECORD_NAME
        if not path.is_file():
            raise ReleaseError(
                f"backup {directory} is incomplete or missing: it has no {RECORD_NAME}",
                untouched=NOTHING_RESTORED,
                next_command=f"pick a complete backup: ls {directory.parent}/*/{RECORD_NAME}",
            )
        try:
            doc = _read_record(path)
            if doc.service != service or doc.stamp != stamp:
                raise ValueError(
                    f"it describes {doc.service!r} at {doc.stamp!r}, not {service!r} at {stamp!r}"
                )
        except (OSError, ValueError) as exc:
            raise ReleaseError(
                f"backup record {path} is unreadable: {exc}",
                untouched=NOTHING_RESTORED,
                next_command=f"pick another backup: ls {directory.parent}",
            ) from None
        return cls(
            service=service,
            stamp=stamp,
            directory=directory,
            entries=tuple(_entry(e) for e in doc.entries),
            project=doc.project,
            taken_at=doc.taken_at,
            note=doc.note,
        )


# -- record.json, as pydantic checks it ---------------------------------------------------
# The record is written by this engine, so any key it does not know means damage, a hand
# edit or another version's record: it is refused, never read in part (schema.Strict).


class _VolumeDoc(Strict):
    driver: NonEmptyStr = "local"
    options: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)


class _DumpDoc(Strict):
    command: list[NonEmptyStr] = Field(min_length=1)
    restore: list[NonEmptyStr] = Field(min_length=1)


class _EntryDoc(Strict):
    kind: NonEmptyStr
    name: NonEmptyStr
    target: NonEmptyStr
    absent: bool
    archive: str | None = None
    sha256: str | None = None
    container: str = ""
    volume: _VolumeDoc | None = None
    dump: _DumpDoc | None = None

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        if kind not in KINDS:
            raise _problem(f"is {{value}}, not one of {', '.join(KINDS)}", kind)
        return kind

    @field_validator("archive")
    @classmethod
    def _file_name(cls, archive: str | None) -> str | None:
        # A name in the backup's own directory, never a path that leads out of it.
        if archive is not None and (archive in ("", ".", "..") or "/" in archive):
            raise _problem("is {value}, not a file name", archive)
        return archive

    @field_validator("sha256")
    @classmethod
    def _digest(cls, sha256: str | None) -> str | None:
        if sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise _problem("is {value}, not a sha256", sha256)
        return sha256

    @model_validator(mode="after")
    def _agree(self) -> _EntryDoc:
        if self.absent != (self.archive is None) or self.absent != (self.sha256 is None):
            raise PydanticCustomError(
                "entry_archive", "has an archive and its sha256 exactly when absent is false"
            )
        if (self.kind == "dump") != (self.dump is not None):
            raise PydanticCustomError(
                "entry_dump", "has dump commands exactly when its kind is dump"
            )
        return self


class _RecordDoc(Strict):
    format: int
    service: NonEmptyStr
    stamp: NonEmptyStr
    project: str = ""
    taken_at: str = ""
    note: str = ""
    nothing_declared: bool | None = None
    entries: list[_EntryDoc]

    @model_validator(mode="after")
    def _declared(self) -> _RecordDoc:
        if self.nothing_declared is not None and self.nothing_declared != (not self.entries):
            raise PydanticCustomError(
                "nothing_declared",
                "says nothing_declared: {said} with {count} entries",
                {"said": str(self.nothing_declared).lower(), "count": len(self.entries)},
            )
        return self


def _problem(template: str, value: object) -> PydanticCustomError:
    return PydanticCustomError("record", template, {"value": repr(value)})


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json.loads keeps the last of two equal keys; a record with one twice was edited."""
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"the key {key!r} appears twice in one object")
        seen[key] = value
    return seen


def _read_record(path: Path) -> _RecordDoc:
    """The checked document; ValueError (or OSError) naming the key on any doubt."""
    try:
        data = json.loads(path.read_bytes(), object_pairs_hook=_no_duplicates)
    except RecursionError:
        raise ValueError("it is nested too deeply to be read") from None
    # The format first: another format's keys are not mistakes of this one.
    found = data.get("format") if isinstance(data, dict) else None
    if found != RECORD_FORMAT or isinstance(found, bool):
        raise ValueError(f"format is {found!r}, expected {RECORD_FORMAT}")
    try:
        return _RecordDoc.model_validate(data)
    except ValidationError as exc:
        raise ValueError(summary(problems(exc, _RecordDoc))) from None


def _entry(doc: _EntryDoc) -> Entry:
    volume, dump = doc.volume, doc.dump
    return Entry(
        kind=doc.kind,
        name=doc.name,
        target=doc.target,
        absent=doc.absent,
        archive=doc.archive,
        sha256=doc.sha256,
        container=doc.container,
        volume=None
        if volume is None
        else VolumeConfig(driver=volume.driver, options=volume.options, labels=volume.labels),
        dump=None
        if dump is None
        else Dump(command=tuple(dump.command), restore=tuple(dump.restore)),
    )


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
        try:
            actual = sha256_file(path)
        except OSError as exc:
            raise ReleaseError(
                f"backup {directory}: cannot read archive {entry.archive}: {exc.strerror}",
                untouched=NOTHING_RESTORED,
                next_command=f"check its permissions and disk (ls -l {path}), then rerun",
            ) from None
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
        lines = path.read_bytes().decode().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else f"byte {exc.start} is not text"
        raise ReleaseError(
            f"backup {directory}: cannot read {SUMS_NAME}: {why}",
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
