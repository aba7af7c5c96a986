"""Parallel migration: a release of N independent services with `--parallel W` against
the same release one service at a time (`--parallel 1`), rounds taking turns on one
world. Reported: medians, and parallel/serial (target <= 0.4 at 10 services, W=4)."""

from __future__ import annotations

import statistics
import subprocess
import time

from bench.release import engine_argv
from bench.world import World


def _release(world: World, width: int) -> float:
    argv = [*engine_argv(world.merge_next()), "--parallel", str(width)]
    began = time.perf_counter()
    done = subprocess.run(argv, cwd=world.deploy.prod, capture_output=True, text=True)
    took = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"the release (--parallel {width}) failed:\n{done.stdout}{done.stderr}")
    return took


def measure(services: int, width: int, rounds: int) -> dict[str, float]:
    serial: list[float] = []
    side_by_side: list[float] = []
    with World(services) as world:
        for _ in range(rounds):
            serial.append(_release(world, 1))
            side_by_side.append(_release(world, width))
    s, p = statistics.median(serial), statistics.median(side_by_side)
    return {"serial_s": s, "parallel_s": p, "ratio": p / s}
