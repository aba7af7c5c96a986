"""Benchmark 5: the engine's backup of a volume against `tar` of the volume's mountpoint
on the same machine, and the engine's memory as the volume grows.

The engine runs prepare alone (`-k prepare`); its figure is the backup step's own
time as its log records it (`backup_seconds`: the throwaway container, the archive
streamed out of Docker, its checksum and record). Speed: tar's seconds / the
engine's seconds (>= 0.9: the engine is at least nine tenths as fast as tar). Memory:
the engine's peak RSS, which should not grow with the volume.
"""

from __future__ import annotations

import os
import shutil
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


def _tar(source: Path) -> float:
    out = Path(tempfile.mkdtemp(prefix="rp-bench-tar-"))
    try:
        began = time.perf_counter()
        subprocess.run(["tar", "-cf", str(out / "v.tar"), "-C", str(source), "."], check=True)
        return time.perf_counter() - began
    finally:
        shutil.rmtree(out)


def _prepare(mib: int) -> tuple[float, float, float]:
    """(engine seconds, tar seconds, engine peak RSS MiB) for a volume of `mib` MiB."""
    with World(1, volume=True) as world:
        _fill(world.volume_dir(world.services[0]), mib)
        ticket = world.merge_next()
        argv = [sys.executable, "-c", MEASURED, *engine_argv(ticket)[3:], "-k", "prepare"]
        done = subprocess.run(argv, cwd=world.deploy.prod, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"prepare of {mib} MiB failed:\n{done.stdout}{done.stderr}")
        rss = int(done.stdout.strip().splitlines()[-1].split()[1]) / 1024
        log = world.deploy.prod / ".asd/workspace/releases" / f"{ticket}.log"
        events = [eventlog.parse_line(line) for line in log.read_text().splitlines()]
        took = next(float(e["backup_seconds"]) for e in events if "backup_seconds" in e)
        return took, _tar(world.volume_dir(world.services[0])), rss


def measure(sizes: tuple[int, ...]) -> list[dict[str, float]]:
    rows = []
    for mib in sizes:
        engine, tar, rss = _prepare(mib)
        rows.append({"mib": mib, "engine_s": engine, "tar_s": tar, "rss_mib": rss})
    return rows
