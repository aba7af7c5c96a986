"""Benchmark 5: the engine's backup of a volume against `tar` of the volume's mountpoint
on the same machine, and the engine's memory as the volume grows.

The engine runs prepare alone (`-k prepare`); its figure is the backup step's own
time as its log records it (`backup_seconds`: the archive, its checksum, its fsync and
the record). Speed: tar's seconds / the engine's seconds (>= 0.9: the engine is at
least nine tenths as fast as tar), against tar alone and against tar followed by an
fsync of its archive, which is what the engine does (a backup not yet on disk is not
one). Medians of rounds that take turns. Memory: the engine's peak RSS, which should
not grow with the volume.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.memory import MEASURED
from bench.release import engine_argv
from bench.world import World
from release_phases import eventlog

CHUNK = 1 << 20


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
        began = time.perf_counter()
        subprocess.run(["tar", "-cf", str(out / "v.tar"), "-C", str(source), "."], check=True)
        written = time.perf_counter() - began
        with (out / "v.tar").open("rb") as fh:
            os.fsync(fh.fileno())
        return written, time.perf_counter() - began
    finally:
        shutil.rmtree(out)


def _prepare(mib: int, rounds: int) -> dict[str, float]:
    """Medians of `rounds` backups of a volume of `mib` MiB each way, taking turns:
    engine seconds, tar seconds (without and with fsync); the engine's peak RSS MiB."""
    engine: list[float] = []
    tar: list[float] = []
    synced: list[float] = []
    rss = 0.0
    with World(1, volume=True) as world:
        volume = world.volume_dir(world.services[0])
        _fill(volume, mib)
        for _ in range(rounds):
            ticket = world.merge_next()
            argv = [sys.executable, "-c", MEASURED, *engine_argv(ticket)[3:], "-k", "prepare"]
            done = subprocess.run(argv, cwd=world.deploy.prod, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"prepare of {mib} MiB failed:\n{done.stdout}{done.stderr}")
            rss = max(rss, int(done.stdout.strip().splitlines()[-1].split()[1]) / 1024)
            log = world.deploy.prod / ".asd/workspace/releases" / f"{ticket}.log"
            events = [eventlog.parse_line(line) for line in log.read_text().splitlines()]
            engine.append(next(float(e["backup_seconds"]) for e in events if "backup_seconds" in e))
            plain, fsynced = _tar(volume)
            tar.append(plain)
            synced.append(fsynced)
            # The next round's release must not find this one in progress.
            (world.deploy.prod / ".asd/workspace/releases" / f"{ticket}.env").unlink()
    return {
        "mib": mib,
        "engine_s": statistics.median(engine),
        "tar_s": statistics.median(tar),
        "tar_fsync_s": statistics.median(synced),
        "rss_mib": rss,
    }


def measure(sizes: tuple[int, ...], rounds: int = 3) -> list[dict[str, float]]:
    return [_prepare(mib, rounds) for mib in sizes]
