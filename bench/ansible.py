"""Benchmark 2: the same release as an Ansible playbook (community.docker's
docker_compose_v2, uri with retries), what an operator would pick instead.

Ansible lives in its own virtual environment (with requests and docker, which
community.docker needs), made on first use under ~/.cache and kept: about 550 MB.
`python3 -m bench.ansible --install` makes it ahead of a run (CI's setup does).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.release import STOP_TIMEOUT
from bench.world import World

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
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCALHOST_WARNING": "0"}
    began = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    took = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"the playbook failed:\n{done.stdout[-3000:]}{done.stderr[-2000:]}")
    return took


if __name__ == "__main__":
    if sys.argv[1:] != ["--install"]:
        sys.exit("usage: python3 -m bench.ansible --install")
    print(install())
