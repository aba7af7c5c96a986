"""Benchmark 1: a release by the engine against the same release by hand (bash).

Both recreate every service on its new tag with the same stop timeout, wait for 200
and check the running image; rounds alternate between the two on one world, each
round releasing a new ticket, in the same environment (`World.env`: the same Compose,
bytecode kept as on a deploy host), after one unmeasured release of the engine in
the first world of the run (its first run compiles). Reported: medians, and engine/bash.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.world import World

STOP_TIMEOUT = "1"
HERE = Path(__file__).resolve().parent


def engine_argv(ticket: str) -> list[str]:
    """The engine's release as an operator runs it, with the bench's stop timeout."""
    return [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-m",
        "release",
        "--ticket",
        ticket,
        "-o",
        f"release_stop_timeout={STOP_TIMEOUT}",
        "-o",
        "release_pull=false",
        # The engine as a deploy host runs it: without the dev extras' hypothesis plugin
        # (selftests/support/engine.py says why).
        "-p",
        "no:hypothesispytest",
    ]


def timed_release(world: World, ticket: str, *extra: str) -> float:
    """Seconds the engine takes to release `ticket` on the world (``extra``: options)."""
    argv = [*engine_argv(ticket), *extra]
    began = time.perf_counter()
    done = subprocess.run(
        argv, cwd=world.deploy.prod, capture_output=True, text=True, env=world.env()
    )
    took = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"the engine's release {extra} failed:\n{done.stdout}{done.stderr}")
    return took


_warm: list[bool] = []


def warm_up(world: World) -> None:
    """One release, not measured, the first time in this process: the first run after
    an install compiles the engine's modules, and a deploy host keeps that bytecode
    (`World.env`), as every later world here does."""
    if not _warm:
        timed_release(world, world.merge_next())
        _warm.append(True)


def _by_hand(world: World) -> float:
    pairs = [f"{svc.name}={svc.endpoint}" for svc in world.services]
    argv = ["bash", str(HERE / "by_hand.sh"), str(world.deploy.prod), STOP_TIMEOUT, *pairs]
    began = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=world.env())
    took = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"the release by hand failed:\n{done.stdout}{done.stderr}")
    return took


def measure(services: int, rounds: int, *, with_ansible: bool) -> dict[str, float]:
    """Medians of `rounds` releases each way, taking turns on one world; each round
    merges a new ticket first. Ansible's figure is 0 when not asked for."""
    from bench import ansible

    engine: list[float] = []
    bash: list[float] = []
    playbook: list[float] = []
    with World(services) as world:
        warm_up(world)
        for _ in range(rounds):
            engine.append(timed_release(world, world.merge_next()))
            world.merge_next()
            bash.append(_by_hand(world))
            if with_ansible:
                world.merge_next()
                playbook.append(ansible.release(world))
    e, b = statistics.median(engine), statistics.median(bash)
    a = statistics.median(playbook) if playbook else 0.0
    return {"engine_s": e, "bash_s": b, "ratio": e / b, "ansible_s": a}
