"""Files replaced atomically: a crash leaves the old file or the new, never half of one."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path


def write(path: Path, chunks: Iterable[bytes]) -> str:
    """Write under a temporary name, fsync, rename, fsync the directory; return the sha256."""
    digest = hashlib.sha256()
    with replacing(path) as tmp, tmp.open("wb") as fh:
        for chunk in chunks:
            digest.update(chunk)
            fh.write(chunk)
    return digest.hexdigest()


def private_dir(path: Path) -> Path:
    """Make `path` and any missing parent readable by its owner only (0700): backups
    and reports hold production data."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for directory in reversed(missing):
        directory.mkdir(mode=0o700)
        directory.chmod(0o700)  # whatever the umask says
    return path


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary file next to ``path`` to fill in the block; it becomes ``path`` only
    when the block ends without an error (fsynced, renamed, the directory fsynced),
    and is removed otherwise.

    For content another process writes (a command's stdout sent to the file), which
    `write` cannot take as chunks.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        # fsync through a descriptor of our own: the writer's may be closed already,
        # and syncing any descriptor of the file flushes the file.
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
