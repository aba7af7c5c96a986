"""Parallel migration: a release of N independent services with `--parallel W` against
the same release one service at a time (`--parallel 1`), rounds taking turns on one
world. Reported: medians, and parallel/serial (target <= 0.4 at 10 services, W=4)."""

from __future__ import annotations

import statistics

from bench.release import timed_release, warm_up
from bench.world import World


def measure(services: int, width: int, rounds: int) -> dict[str, float]:
    serial: list[float] = []
    side_by_side: list[float] = []
    with World(services) as world:
        warm_up(world)
        for _ in range(rounds):
            serial.append(timed_release(world, world.merge_next(), "--parallel", "1"))
            side_by_side.append(timed_release(world, world.merge_next(), "--parallel", str(width)))
    s, p = statistics.median(serial), statistics.median(side_by_side)
    return {"serial_s": s, "parallel_s": p, "ratio": p / s}
