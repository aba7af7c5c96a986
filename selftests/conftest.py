"""Fixtures for the engine's own tests: real Docker, real git.

Docker tests fail (never skip) under CI=true when the engine is unreachable.
Everything the tests create carries a label with this run's id, and cleanup
removes by that exact label or by exact compose project name, nothing broader.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from selftests.support import debian
from selftests.support.deployrepo import DeployRepo, Service, free_port
from selftests.support.images import LABEL, ImageSpec, build

# The reliability suite's marker, --full and --reliability-doc.
pytest_plugins = ["selftests.support.reliability"]

RUN_ID = uuid.uuid4().hex[:8]
REPO_ROOT = Path(__file__).resolve().parents[1]


def _docker_or_fail() -> docker.DockerClient:
    try:
        client = docker.from_env()
        client.ping()
        return client
    except Exception as exc:  # any failure to reach the engine means the same thing here
        if os.environ.get("CI") == "true":
            pytest.fail(f"Docker Engine unreachable under CI=true: {exc}", pytrace=False)
        pytest.skip(f"Docker Engine unreachable: {exc}")


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    client = _docker_or_fail()
    yield client
    _cleanup(client)


def _cleanup(client: docker.DockerClient) -> None:
    label = f"{LABEL}={RUN_ID}"
    for c in client.containers.list(all=True, filters={"label": label}):
        c.remove(force=True, v=True)
    # sparse: no inspect of each listed container, which fails when another test run
    # removes one of its own between the list and the inspect.
    listed = client.containers.list(
        all=True, sparse=True, filters={"label": "com.docker.compose.project"}
    )
    for c in listed:
        if (c.attrs.get("Labels") or {}).get("com.docker.compose.project", "").startswith(
            f"rp{RUN_ID}-"
        ):
            with contextlib.suppress(docker.errors.NotFound):
                c.remove(force=True, v=True)
    for v in client.volumes.list(filters={"label": label}):
        v.remove(force=True)
    for n in client.networks.list(filters={"label": "com.docker.compose.project"}):
        if n.attrs["Labels"].get("com.docker.compose.project", "").startswith(f"rp{RUN_ID}-"):
            n.remove()
    # By id: a tag imported again leaves its earlier image untagged, still ours.
    for img in client.images.list(all=True, filters={"label": label}):
        client.images.remove(img.id, force=True)


class Images:
    """Session images: rp<run>/<name>:<tag>, built on first use."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client
        self.built: dict[str, str] = {}

    def repository(self, name: str) -> str:
        return f"rp{RUN_ID}/{name}"

    def get(self, name: str, tag: str, health: str = "ok", *, rebuild: bool = False) -> str:
        spec = ImageSpec(self.repository(name), tag, health)
        if rebuild or spec.ref not in self.built:
            self.built[spec.ref] = build(self.client, spec, RUN_ID)
        return spec.ref


@pytest.fixture(scope="session")
def images(docker_client: docker.DockerClient) -> Images:
    return Images(docker_client)


@pytest.fixture(scope="session")
def debian_images(docker_client: docker.DockerClient) -> debian.DebianImages:
    """The cached Debian images (base, PostgreSQL, Python app base), built on first use.

    They outlive the run (see selftests/support/debian.py); no cleanup removes them.
    A failure to build fails the test; only a missing debootstrap outside CI skips it.
    """
    try:
        return debian.ensure_images(docker_client)
    except debian.DebootstrapMissing as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"under CI=true: {exc}", pytrace=False)
        pytest.skip(str(exc))


@pytest.fixture
def deploy(tmp_path: Path) -> DeployRepo:
    """A deploy repo with origin, dev and (not yet cloned) prod."""
    return DeployRepo(tmp_path, RUN_ID)


def remove_project(client: docker.DockerClient, project: str) -> None:
    """Everything compose made for exactly this project: containers, networks, volumes."""
    label = {"label": f"com.docker.compose.project={project}"}
    for c in client.containers.list(all=True, filters=label):
        c.remove(force=True, v=True)
    for n in client.networks.list(filters=label):
        n.remove()
    for v in client.volumes.list(filters=label):
        v.remove(force=True)


@pytest.fixture
def make_service(images: Images, docker_client: docker.DockerClient):
    """Build `Service` records whose compose project is unique to this test.

    The projects are removed when the test ends: each holds a network, and the
    engine has only a few dozen address pools for them.
    """
    test_id = uuid.uuid4().hex[:6]
    projects: set[str] = set()

    def make(name: str, tag: str = "1", health: str = "ok", **kw) -> Service:
        images.get(name, tag, health)
        projects.add(f"rp{RUN_ID}-{test_id}-{name}")
        return Service(
            name=name,
            project=f"rp{RUN_ID}-{test_id}-{name}",
            port=free_port(),
            repository=images.repository(name),
            tag=tag,
            **kw,
        )

    yield make
    for project in sorted(projects):
        remove_project(docker_client, project)
