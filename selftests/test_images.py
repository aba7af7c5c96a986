"""Images: built from the package by the release, and the exact ids a revert brings back."""

from __future__ import annotations

import httpx
import pytest

from selftests.support import engine
from selftests.support.scenario import container, running_on_prod, up, v1_running_v2_merged

pytestmark = pytest.mark.docker

DOCKERFILE = """\
FROM {base}
COPY version /www/version
"""


def _version(port: int) -> str:
    return httpx.get(f"http://127.0.0.1:{port}/version", timeout=5).text.strip()


def _built_v2(deploy, make_service, name: str, dockerfile: str, *, image: str | None = None):
    """`name` at tag 1 running on prod; merged: tag 2 built by compose from the package."""
    [svc] = running_on_prod(deploy, make_service, (name,)).values()
    base = svc.image
    svc.tag = "2"
    svc.compose = {"build": {"context": "."}}
    if image is not None:
        svc.compose["image"] = image
    deploy.write_service(svc)
    deploy.write(f"packages/{name}/Dockerfile", dockerfile.format(base=base))
    deploy.write(f"packages/{name}/version", "2-built\n")
    deploy.merge_feature("feature/1234", f"ticket 1234: {name} built from its package")
    return svc


def test_a_release_builds_the_image_from_its_package(deploy, make_service, docker_client):
    svc = _built_v2(deploy, make_service, "built", DOCKERFILE)
    run = engine.run(deploy.prod, "1234")
    assert run.rc == 0, run
    assert _version(svc.port) == "2-built"
    running = container(docker_client, svc)
    assert running.attrs["Config"]["Image"] == svc.image
    assert running.attrs["Image"] == docker_client.images.get(svc.image).id
    [report] = (deploy.prod / "reports").glob("1234-release-*.html")
    assert "build of built" in report.read_text()


def test_a_failing_build_stops_the_release_touching_nothing(deploy, make_service, docker_client):
    svc = _built_v2(deploy, make_service, "badbuild", DOCKERFILE + "RUN exit 7\n")
    before = container(docker_client, svc).id
    run = engine.run(deploy.prod, "1234")
    assert run.rc == 1, run
    assert "the build of badbuild exited" in run.output, run
    assert "nothing was recreated" in run.output
    failed = run.event("migrate", "failed")
    assert failed["step"] == "build", failed
    assert container(docker_client, svc).id == before, "the running container was not touched"
    assert _version(svc.port) == "1"


def test_a_build_tagged_otherwise_than_the_manifest_is_refused(deploy, make_service):
    svc = _built_v2(deploy, make_service, "mistag", DOCKERFILE, image="elsewhere/mistag:9")
    run = engine.run(deploy.prod, "1234")
    assert run.rc == 1, run
    assert "builds an image tagged elsewhere/mistag:9, not the manifest's" in run.output, run
    assert f"set `image: {svc.image}`" in run.output
    assert run.event("migrate", "failed")["step"] == "build"


def test_prepare_records_the_image_each_service_ran(deploy, make_service, docker_client):
    services = v1_running_v2_merged(deploy, make_service, ("api", "web"))
    ran = {n: container(docker_client, s).attrs["Image"] for n, s in services.items()}
    run = engine.run(deploy.prod, "1234")
    assert run.rc == 0, run
    assert run.state.images == ran
    assert all(image.startswith("sha256:") for image in ran.values())


def test_a_revert_brings_back_the_old_id_after_its_tag_moved(
    deploy, make_service, docker_client, images
):
    [svc] = v1_running_v2_merged(deploy, make_service, ("retag",)).values()
    old = docker_client.images.get(f"{svc.repository}:1").id
    assert engine.run(deploy.prod, "1234").rc == 0
    moved = images.get("retag", "1", rebuild=True)  # the tag now names another image
    moved_id = docker_client.images.get(moved).id
    assert moved_id != old
    run = engine.run(deploy.prod, "1234", mode="revert")
    assert run.rc == 0, run
    assert container(docker_client, svc).attrs["Image"] == old
    assert docker_client.images.get(f"{svc.repository}:1").id == old, "the tag points back"
    assert f"pointed at {moved_id}; tagged {old} again" in _report(deploy, "revert")


def test_a_revert_refuses_before_anything_stops_when_the_old_image_is_gone(
    deploy, make_service, docker_client
):
    [svc] = v1_running_v2_merged(deploy, make_service, ("gone",)).values()
    old = docker_client.images.get(f"{svc.repository}:1").id
    assert engine.run(deploy.prod, "1234").rc == 0
    running = container(docker_client, svc).id
    head = deploy.prod_repo.head.commit.hexsha
    docker_client.images.remove(old, force=True)
    run = engine.run(deploy.prod, "1234", mode="revert")
    assert run.rc == 1, run
    assert f"gone={old}" in run.output and "no longer on this host" in run.output, run
    assert "nothing was reverted" in run.output
    assert container(docker_client, svc).id == running, "the service was not stopped"
    assert deploy.prod_repo.head.commit.hexsha == head, "the code was not reverted"


def _report(deploy, mode: str) -> str:
    [found] = (deploy.prod / "reports").glob(f"1234-{mode}-*.html")
    return found.read_text()


def test_a_container_already_on_the_new_image_is_not_recorded_and_no_tag_moves(
    deploy, make_service, docker_client
):
    """Pulled and started by hand before the release: what runs is not BASE_SHA's image,
    so the revert must not point the old tag at it."""
    [svc] = v1_running_v2_merged(deploy, make_service, ("byhand",)).values()
    base = deploy.prod_repo.head.commit.hexsha
    old = docker_client.images.get(f"{svc.repository}:1").id
    deploy.prod_repo.git.pull("--ff-only", "origin", "main")
    up(deploy, svc)  # the operator's mistake: v2 runs before the release
    run = engine.run(deploy.prod, "1234", f"--base-sha={base}")
    assert run.rc == 0, run
    assert run.state.images == {}, "the new image is not recorded as the one to go back to"
    assert run.state.services == ["byhand"]
    reverted = engine.run(deploy.prod, "1234", mode="revert")
    assert reverted.rc == 0, reverted
    assert docker_client.images.get(f"{svc.repository}:1").id == old, "the old tag stayed"
    assert container(docker_client, svc).attrs["Image"] == old
