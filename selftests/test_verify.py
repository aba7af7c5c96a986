"""Phase 4 for real: image and health checks, and a service's own e2e tests."""

from __future__ import annotations

import threading

import pytest

from selftests.support import engine
from selftests.support.scenario import v1_running_v2_merged

pytestmark = pytest.mark.docker


def _containers(docker_client, svc):
    return docker_client.containers.list(
        all=True, filters={"label": f"com.docker.compose.project={svc.project}"}
    )


def test_a_release_completes_with_every_check_passing(deploy, make_service):
    v1_running_v2_merged(deploy, make_service)
    run = engine.run(deploy.prod, "1234", "-rA")
    assert run.rc == 0, run
    for check in ("test_image[api]", "test_image[web]", "test_health[api]", "test_health[web]"):
        assert f"PASSED test_verify.py::{check}" in run.output, run
    assert (run.state.phase, run.state.phase_status) == ("verify", "done")
    assert "ticket 1234: COMPLETE" in run.output


def test_a_tag_moved_after_migrate_fails_the_image_check(
    deploy, make_service, images, docker_client
):
    services = v1_running_v2_merged(deploy, make_service, v2_tag={"web": "2-moving"})
    assert engine.run(deploy.prod, "1234").rc == 0
    # Someone re-points web's tag at another image: the running container is not it.
    other = docker_client.images.get(images.get("web", "3"))
    other.tag(services["web"].repository, "2-moving")
    run = engine.run(deploy.prod, "1234", "-k", "verify")
    assert run.rc == 1, run
    assert "1 failed, 3 passed" in run.output, run
    assert (
        "tag moved" in run.output
        or "tag may have moved" in run.output
        or ("was the tag moved" in run.output)
    )
    failed = run.event("verify", "failed")
    assert failed["service"] == "web" and failed["step"] == "image"
    assert (run.state.phase, run.state.phase_status) == ("verify", "failed")
    assert "pytest -m revert --ticket 1234" in run.output


def test_a_health_check_that_recovers_within_the_backoff_passes(
    deploy, make_service, docker_client
):
    services = v1_running_v2_merged(deploy, make_service, ("web",))
    assert engine.run(deploy.prod, "1234").rc == 0
    (container,) = _containers(docker_client, services["web"])
    container.stop(timeout=1)
    timer = threading.Timer(2.0, container.start)
    timer.start()
    try:
        run = engine.run(deploy.prod, "1234", "-k", "verify and test_health")
    finally:
        timer.join()
    assert run.rc == 0, run
    steps = [e for e in run.events if e["event"] == "step" and e["step"] == "test_health"]
    assert int(steps[-1]["probes"]) > 1, steps[-1]
    assert steps[-1]["health"].startswith("200 after")


E2E_TESTS = """\
import httpx


def test_serves_the_new_version(e2e):
    assert e2e.service == "web"
    assert httpx.get(e2e.base_url + "/version").text.strip() == "2"


def test_has_a_search_page(e2e):
    response = httpx.get(e2e.base_url + "/search")
    assert response.status_code == 200, f"GET /search answered {response.status_code}"
"""


def test_e2e_tests_run_in_verify_each_its_own_case(deploy, make_service):
    v1_running_v2_merged(
        deploy,
        make_service,
        ("web",),
        files={"packages/web/e2e/test_web.py": E2E_TESTS},
    )
    # enable e2e in web's manifest, in the same merge
    manifest = deploy.dev / "packages/web/manifest.yaml"
    manifest.write_text(manifest.read_text() + "e2e: {enabled: true}\n")
    deploy.merge_feature("feature/e2e", "enable web's e2e tests")
    run = engine.run(deploy.prod, "1234", "-rA")
    assert run.rc == 1, run
    assert "PASSED packages/web/e2e/test_web.py::test_serves_the_new_version" in run.output, run
    assert "FAILED packages/web/e2e/test_web.py::test_has_a_search_page" in run.output
    assert "GET /search answered 404" in run.output
    failed = run.event("verify", "failed")
    assert failed["service"] == "web"
    # The image and health checks ran too: a complete picture.
    assert "PASSED test_verify.py::test_health[web]" in run.output
    # -k verify collects them from the worktree now, and they still count
    rerun = engine.run(deploy.prod, "1234", "-k", "verify", "-rA")
    assert "FAILED packages/web/e2e/test_web.py::test_has_a_search_page" in rerun.output, rerun
