"""Benchmark 5: the engine's backup and restore of a volume against `tar` of the
volume's mountpoint on the same machine, and the engine's memory as the volume grows.

Backup: the engine runs prepare alone (`-k prepare`); its figure is the backup step's
own time as its log records it (`backup_seconds`: the archive, its checksum, its fsync
and the record). Against tar alone, and against tar followed by an fsync of its
archive, which is what the engine does (a backup not yet on disk is not one).

Restore: the engine then reverts the data alone (`pytest -m revert --skip-git`); its
figures are the restore step's own as its log records them: `fill_seconds` (the
volume removed, created again and filled from the backup) and `check_seconds` (the
volume flushed to disk while it is read back and compared with the backup, which tar
does not do). Against a restore by hand of a directory on the same filesystem
holding the same data: `rm -rf` of what stands there and `tar -x` of the same
archive, without and with a flush of that filesystem (`sync --file-system`): the
fill against the first, fill and check against the second. The
revert's set-aside of what stood there is a backup, measured above, and is left out.

Speed: tar's seconds / the engine's seconds (>= 0.9: the engine is at least nine
tenths as fast as tar). Medians of rounds that take turns. Before each contender
runs, everything written so far is flushed (`sync`) and, where this process may
(root), the page cache is dropped: each starts from the disk, as a volume not read
for a while is. Without that, on a virtual machine, whichever runs first on memory
the guest has not touched since it booted pays for it (tar's 1 GiB took 0.5 s or
2.6 s by that alone); `COLD` says which way the figures were taken. Memory: the engine's peak
RSS, which should not grow with the volume.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.memory import measured
from bench.release import engine_argv
from bench.world import World
from release_phases import eventlog

CHUNK = 1 << 20
DROP_CACHES = Path("/proc/sys/vm/drop_caches")
#: Whether the page cache was dropped before each contender (`_from_the_disk`).
COLD = os.access(DROP_CACHES, os.W_OK)


def _from_the_disk() -> None:
    """Flush what was written; drop the page cache when this process may."""
    os.sync()
    if COLD:
        DROP_CACHES.write_text("3\n")


def _fill(directory: Path, mib: int) -> None:
    """`mib` MiB of incompressible data in 16 MiB files."""
    block = os.urandom(CHUNK)
    for n in range(0, mib, 16):
        with open(directory / f"part{n:05d}.bin", "wb") as fh:
            for _ in range(min(16, mib - n)):
                fh.write(block)


def _tar(source: Path) -> tuple[float, float]:
    """Seconds for `tar` of the mountpoint into a file, without and with its fsync (the
    engine fsyncs every archive before it counts as a backup)."""
    out = Path(tempfile.mkdtemp(prefix="rp-bench-tar-"))
    try:
        _from_the_disk()
        began = time.perf_counter()
        subprocess.run(["tar", "-cf", str(out / "v.tar"), "-C", str(source), "."], check=True)
        written = time.perf_counter() - began
        with (out / "v.tar").open("rb") as fh:
            os.fsync(fh.fileno())
        return written, time.perf_counter() - began
    finally:
        shutil.rmtree(out)


def _untar(archive: Path) -> tuple[float, float]:
    """Seconds for a restore by hand of a directory on the filesystem of Docker's
    volumes that holds the volume's data: `rm -rf` of what stands there, then `tar -x`
    of the archive (as root: owners and modes restored, as the engine does); without
    and with a flush of that filesystem (the engine flushes what it restored)."""
    out = Path(tempfile.mkdtemp(prefix="rp-bench-untar-", dir=archive.parent))
    untar = ["tar", "-xf", str(archive), "-C", str(out)]
    try:
        subprocess.run(untar, check=True)  # what stands there, as in the volume
        standing = [str(p) for p in out.iterdir()]
        _from_the_disk()
        began = time.perf_counter()
        subprocess.run(["rm", "-rf", *standing], check=True)
        subprocess.run(untar, check=True)
        written = time.perf_counter() - began
        subprocess.run(["sync", "--file-system", str(out)], check=True)
        return written, time.perf_counter() - began
    finally:
        shutil.rmtree(out)


def _engine(world: World, what: str, argv: list[str]) -> tuple[dict[str, str], float]:
    """Run the engine (``argv`` after `python -m pytest`) on the world, measured: the
    fields of its log's last line that has ``what``, and its peak RSS MiB."""
    ticket = argv[argv.index("--ticket") + 1]
    _from_the_disk()
    rss = measured(world, argv, f"the run logging {what}")
    log = world.deploy.prod / ".asd/workspace/releases" / f"{ticket}.log"
    events = [eventlog.parse_line(line) for line in log.read_text().splitlines()]
    return next(e for e in reversed(events) if what in e), rss


def _round_trip(mib: int, rounds: int) -> dict[str, float]:
    """Medians of `rounds` backups and restores of a volume of `mib` MiB each way,
    taking turns: engine seconds, tar seconds; the engine's peak RSS MiB."""
    taken: dict[str, list[float]] = {k: [] for k in ("engine", "tar", "synced")}
    restored: dict[str, list[float]] = {k: [] for k in ("fill", "check", "untar", "flushed")}
    rss = 0.0
    with World(1, volume=True) as world:
        volume = world.volume_dir(world.services[0])
        _fill(volume, mib)
        releases = world.deploy.prod / ".asd/workspace/releases"
        for _ in range(rounds):
            ticket = world.merge_next()
            backup, peak = _engine(
                world, "backup_seconds", [*engine_argv(ticket)[3:], "-k", "prepare"]
            )
            rss = max(rss, peak)
            taken["engine"].append(float(backup["backup_seconds"]))
            plain, fsynced = _tar(volume)
            taken["tar"].append(plain)
            taken["synced"].append(fsynced)
            revert = [*engine_argv(ticket)[3:], "--skip-git"]
            revert[revert.index("release")] = "revert"
            restore, peak = _engine(world, "fill_seconds", revert)
            rss = max(rss, peak)
            restored["fill"].append(float(restore["fill_seconds"]))
            restored["check"].append(float(restore["check_seconds"]))
            record = world.deploy.prod / ".asd/workspace/backups" / world.services[0].name
            archive = next((record / backup["stamp"]).glob("*.tar"))
            plain, flushed = _untar(archive)
            restored["untar"].append(plain)
            restored["flushed"].append(flushed)
            # The next round's release must not find this one's state.
            (releases / f"{ticket}.env").unlink()
    return {
        "mib": mib,
        "engine_s": statistics.median(taken["engine"]),
        "tar_s": statistics.median(taken["tar"]),
        "tar_fsync_s": statistics.median(taken["synced"]),
        "fill_s": statistics.median(restored["fill"]),
        "check_s": statistics.median(restored["check"]),
        "untar_s": statistics.median(restored["untar"]),
        "untar_sync_s": statistics.median(restored["flushed"]),
        "rss_mib": rss,
    }


def measure(sizes: tuple[int, ...], rounds: int = 3) -> list[dict[str, float]]:
    return [_round_trip(mib, rounds) for mib in sizes]
