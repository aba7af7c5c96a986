"""Real PostgreSQL and a real Python web app, from the cached Debian images, with compose.

The images come from selftests/support/debian.py: made once (debootstrap, docker build) and
kept between runs. This test starts its own compose project and removes exactly what it made:
that project's containers, network and volume (`down -v`) and the app image it built, by its
exact tag. The cached images stay.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import docker
import docker.errors
import httpx
import pytest
import yaml

from selftests.conftest import RUN_ID, remove_project
from selftests.support import composecli
from selftests.support.debian import APP_PY, DebianImages
from selftests.support.deployrepo import free_port
from selftests.support.images import LABEL

pytestmark = pytest.mark.docker

ITEMS_SQL = """
CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL);
INSERT INTO items VALUES (1, 'apple'), (2, 'banana');
"""


def run(argv: list[str], stdin: str | None = None, timeout: float = 300) -> str:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(argv)}:\n{done.stdout}{done.stderr}"
    return done.stdout


def write_project(root: Path, project: str, images: DebianImages, port: int) -> Path:
    """A compose project: postgres with a named volume, and an app built FROM the app base."""
    labels = {LABEL: RUN_ID}
    app = root / "app"
    app.mkdir()
    shutil.copy(APP_PY, app / "app.py")
    (app / "Dockerfile").write_text(
        f'FROM {images.python_app}\nCOPY app.py /app/app.py\nCMD ["python3", "/app/app.py"]\n'
    )
    compose = {
        "name": project,
        "services": {
            "db": {
                "image": images.postgres,
                "labels": labels,
                "volumes": ["pgdata:/var/lib/postgresql/data"],
                "healthcheck": {
                    "test": ["CMD", "pg_isready", "-U", "app", "-d", "app"],
                    "interval": "1s",
                    "timeout": "3s",
                    "retries": 60,
                },
                "stop_grace_period": "5s",
            },
            "app": {
                "build": {"context": "app", "labels": labels},
                "image": f"{project}/app:1",
                "labels": labels,
                "environment": {"DATABASE_URL": "postgresql://app:app@db:5432/app"},
                "ports": [f"127.0.0.1:{port}:8080"],
                "depends_on": {"db": {"condition": "service_healthy"}},
                "stop_grace_period": "2s",
            },
        },
        "volumes": {"pgdata": {"labels": labels}},
        "networks": {"default": {"labels": labels}},
    }
    path = root / "compose.yaml"
    path.write_text(yaml.safe_dump(compose, sort_keys=False))
    return path


def get_when_up(url: str, timeout: float = 30.0) -> httpx.Response:
    """GET url until it answers at all; the app needs a moment to listen."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(url, timeout=5)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def test_postgres_and_app_from_cached_images(
    debian_images: DebianImages, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    project = f"rp{RUN_ID}-{uuid.uuid4().hex[:6]}"
    app_image = f"{project}/app:1"
    port = free_port()
    compose_file = write_project(tmp_path, project, debian_images, port)
    compose = composecli.argv("-p", project, "-f", str(compose_file))
    try:
        run([*compose, "up", "--detach", "--wait", "--wait-timeout", "90", "db"])
        db = run([*compose, "ps", "--quiet", "db"]).strip()
        psql = ["docker", "exec", "-i", db, "psql", "-v", "ON_ERROR_STOP=1", "-U", "app", "app"]
        run(psql, stdin=ITEMS_SQL)

        run([*compose, "up", "--detach", "--build", "app"], timeout=600)
        health = get_when_up(f"http://127.0.0.1:{port}/health")
        assert (health.status_code, health.text) == (200, "ok\n")
        items = httpx.get(f"http://127.0.0.1:{port}/items", timeout=5)
        assert (items.status_code, items.text) == (200, "1\tapple\n2\tbanana\n")
    finally:
        subprocess.run(
            [*compose, "down", "--volumes", "--timeout", "5"], capture_output=True, timeout=120
        )
        remove_project(docker_client, project)  # whatever `down` left of this project
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(app_image)
