"""Checking a restore: the target, archived again, against the backup member by member."""

from __future__ import annotations

import io
import tarfile
import tempfile
from collections.abc import Iterable
from typing import IO

from docker.models.containers import Container

from release_phases.backup.deployed import VOLUME_MOUNT, Deployed, helper
from release_phases.backup.record import BackupRecord, Entry, sha256_of
from release_phases.errors import ReleaseError

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
) -> None:
    """Raise unless what the entry's target holds now is exactly what the backup holds.

    ``image`` is the one to mount a volume in; by default the service's current one
    (a restore passes the image it found before it removed the service's containers).
    """
    if entry.kind == "path" and entry.absent:
        return
    now: list[Member] | None
    if entry.kind == "volume":
        volume = deployed.current_volume(entry)
        if volume is None:
            now = None if entry.absent else []
        else:
            image = image or deployed.helper_image()
            assert image is not None
            with helper(deployed, image, volume.name, read_only=True) as mounted:
                now = _spooled_members(mounted.get_archive(VOLUME_MOUNT)[0])
        if entry.absent:
            # Gone, or created again empty: only the volume's root directory is left.
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
        expected = members(fh)
    if now != expected:
        differ = sorted({m[0] for m in set(now or []) ^ set(expected)})
        raise ReleaseError(
            f"restore of {deployed.service} {entry.label} from {record.stamp} does not match"
            f" {entry.archive}: {', '.join(differ[:10]) or 'member order'} differ",
            untouched=undo,
            next_command=f"inspect {record.directory}",
        )


def _spooled_members(chunks: Iterable[bytes]) -> list[Member]:
    with tempfile.TemporaryFile() as fh:
        for chunk in chunks:
            fh.write(chunk)
        fh.seek(0)
        return members(fh)
