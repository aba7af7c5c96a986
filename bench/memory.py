"""Benchmark 6: the engine's peak memory (its own RSS, children apart) during a release
of many services, beside a release of one service in the same run."""

from __future__ import annotations

import subprocess
import sys

from bench.release import engine_argv
from bench.world import World

#: pytest run in-process, then the process's own high-water mark (ru_maxrss, KiB on
#: Linux) printed last: what the engine held, without Compose and docker beside it.
MEASURED = (
    "import resource, sys, pytest\n"
    "rc = pytest.main(sys.argv[1:])\n"
    "print('maxrss_kib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    "sys.exit(rc)\n"
)


def measured(world: World, argv: list[str], what: str) -> float:
    """Run the engine (``argv``: pytest's arguments) in the world's prod checkout, in
    this process's pytest (`MEASURED`); its peak RSS in MiB. ``what`` names the run in
    the error should it fail."""
    run = [sys.executable, "-c", MEASURED, *argv]
    done = subprocess.run(
        run, cwd=world.deploy.prod, capture_output=True, text=True, env=world.env()
    )
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{done.stdout}{done.stderr}")
    return int(done.stdout.strip().splitlines()[-1].split()[1]) / 1024


def peak_mib(services: int) -> float:
    with World(services, host_network=True) as world:
        ticket = world.merge_next()
        return measured(world, engine_argv(ticket)[3:], f"the release of {services}")


def measure(services: int) -> dict[str, float]:
    return {"one_mib": peak_mib(1), "many_mib": peak_mib(services)}
