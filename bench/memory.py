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


def peak_mib(services: int) -> float:
    with World(services, host_network=True) as world:
        ticket = world.merge_next()
        argv = [sys.executable, "-c", MEASURED, *engine_argv(ticket)[3:]]
        done = subprocess.run(
            argv, cwd=world.deploy.prod, capture_output=True, text=True, env=world.env()
        )
        if done.returncode != 0:
            raise RuntimeError(f"the release of {services} failed:\n{done.stdout}{done.stderr}")
        last = done.stdout.strip().splitlines()[-1].split()
        return int(last[1]) / 1024


def measure(services: int) -> dict[str, float]:
    return {"one_mib": peak_mib(1), "many_mib": peak_mib(services)}
