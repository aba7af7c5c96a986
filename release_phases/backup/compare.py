"""Checking a restore: the target, archived again, against the backup.

A volume the engine can read on this host, whose backup GNU tar made there, is
archived again the same way and compared with the backup's archive byte for byte:
the same bytes prove every member the same, at the cost of one read of the volume
and of the archive (verified against its recorded sha256 before the restore began).
Anything else is compared member by member (name, type, mode, owner, mtime, link,
size, content).
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import IO

from docker.models.containers import Container

from release_phases.backup.deployed import VOLUME_MOUNT, Deployed, helper
from release_phases.backup.record import BackupRecord, Entry, sha256_of
from release_phases.errors import ReleaseError
from release_phases.host.engine import archive_argv, readable_directory

#: How a check went, for the restore's line.
BYTE_FOR_BYTE = "checked: archived again, byte for byte the backup"
MEMBER_BY_MEMBER = "checked member by member against the backup"
#: A GNU tar archive's magic, in each header at offset 257; Docker's archives (Go's
#: archive/tar) write POSIX's instead, so archiving again with GNU tar cannot match them.
GNU_MAGIC = b"ustar  \x00"
#: Bytes compared at a time (`_equals_file`).
COMPARE_CHUNK = 1024 * 1024

Member = tuple[str, bytes, int, int, int, int, str, int, str]


def members(fileobj: IO[bytes]) -> list[Member]:
    """Each tar member's name, type, mode, owner, mtime, link, size and content sha256."""
    out = []
    with tarfile.open(fileobj=fileobj, mode="r|") as tar:
        for m in tar:
            if m.isfile():
                content = tar.extractfile(m)
                assert content is not None
            else:
                content = io.BytesIO()
            out.append(
                (
                    m.name,
                    m.type,
                    # Permission bits only: Docker's archives also carry the file type
                    # there (S_IFDIR...), GNU tar's do not, and `type` says it anyway.
                    m.mode & 0o7777,
                    m.uid,
                    m.gid,
                    int(m.mtime),
                    m.linkname,
                    m.size,
                    sha256_of(content),
                )
            )
    return out


def check_restored(
    deployed: Deployed,
    record: BackupRecord,
    entry: Entry,
    first: Container | None,
    undo: str,
    *,
    image: str | None = None,
) -> str:
    """Raise unless what the entry's target holds now is exactly what the backup holds;
    how that was checked (empty for an absent path, which is left as it is).

    ``image`` is the one to mount a volume in; by default the service's current one
    (a restore passes the image it found before it removed the service's containers).
    """
    if entry.kind == "path" and entry.absent:
        return ""
    now: list[Member] | None
    if entry.kind == "volume":
        volume = deployed.current_volume(entry)
        if volume is None:
            now = None if entry.absent else []
        elif local := readable_directory(volume.attrs, os.environ.get("DOCKER_HOST")):
            if not entry.absent and _same_bytes(deployed, local, record, entry):
                return BYTE_FOR_BYTE
            _, now = deployed.host.pipe(archive_argv(local, VOLUME_MOUNT.lstrip("/")), members)
        else:
            image = image or deployed.helper_image()
            assert image is not None
            with helper(deployed, image, volume.name, read_only=True) as mounted:
                now = _spooled_members(mounted.get_archive(VOLUME_MOUNT)[0])
        if entry.absent:
            # Gone, or created again empty: only the volume's root directory is left.
            if now is None or len(now) == 1:
                return MEMBER_BY_MEMBER
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
        expected = members(fh)
    if now != expected:
        differ = sorted({m[0] for m in set(now or []) ^ set(expected)})
        raise ReleaseError(
            f"restore of {deployed.service} {entry.label} from {record.stamp} does not match"
            f" {entry.archive}: {', '.join(differ[:10]) or 'member order'} differ",
            untouched=undo,
            next_command=f"inspect {record.directory}",
        )
    return MEMBER_BY_MEMBER


def _same_bytes(deployed: Deployed, local: Path, record: BackupRecord, entry: Entry) -> bool:
    """Is the volume at ``local``, archived again as a backup archives it on this host,
    byte for byte the entry's archive?

    Only an archive GNU tar made can match; for any other, nothing is read. A
    mismatch proves nothing by itself (a member's header may be written another
    way): the caller compares member by member then. The archive's bytes are
    compared, not its checksum computed again: the restore verified it before it
    began, and comparing is cheaper than hashing (the check of 1 GiB, its flush to
    disk beside it, took 0.54 s where a sha256 of the same stream took 0.81 s;
    medians of three, bench/backup.py).
    """
    assert entry.archive is not None
    archive = record.directory / entry.archive
    with archive.open("rb") as fh:
        if fh.read(265)[257:] != GNU_MAGIC:
            return False
    argv = archive_argv(local, VOLUME_MOUNT.lstrip("/"))
    result, same = deployed.host.pipe(argv, partial(_equals_file, archive))
    return result.ok and same


def _equals_file(path: Path, stream: IO[bytes]) -> bool:
    """Does ``stream`` hold exactly the bytes of the file at ``path``?"""
    with path.open("rb") as fh:
        while chunk := stream.read(COMPARE_CHUNK):
            if fh.read(len(chunk)) != chunk:
                return False
        return fh.read(1) == b""


def _spooled_members(chunks: Iterable[bytes]) -> list[Member]:
    with tempfile.TemporaryFile() as fh:
        for chunk in chunks:
            fh.write(chunk)
        fh.seek(0)
        return members(fh)
