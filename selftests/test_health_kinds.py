"""Health of any kind, for real: a TCP port, Docker's own HEALTHCHECK of every container,
a command in the container; and a container that dies ends the wait at once."""

from __future__ import annotations

import re
import time

import pytest

from selftests.support import engine
from selftests.support.images import HEALTH_PATH, HTTP_PORT
from selftests.support.scenario import up, v1_running_v2_merged

pytestmark = pytest.mark.docker

#: Docker's own check, as a compose file declares it: busybox wget of the endpoint.
HEALTHCHECK = {
    "test": [
        "CMD",
        "/bin/busybox",
        "wget",
        "-q",
        "-O",
        "/dev/null",
        f"http://127.0.0.1:{HTTP_PORT}{HEALTH_PATH}",
    ],
    "interval": "1s",
    "timeout": "2s",
    "retries": 30,
}


def _report(run: engine.Run) -> str:
    [found] = (run.repo / "reports").glob(f"{run.ticket}-release-*.html")
    return found.read_text()


def _release_v2(deploy, make_service, name: str, health, **kw: object):
    """`name` at tag 1 running on prod, its move to tag 2 merged; returns the service.
    `health(svc)` gives the manifest's health section."""
    svc = make_service(name, **kw)
    svc.health = health(svc)
    deploy.write_service(svc)
    deploy.commit(f"{name} at tag 1")
    deploy.push()
    deploy.clone_prod()
    up(deploy, svc)
    make_service(name, "2")
    svc.tag = "2"
    deploy.write_service(svc)
    deploy.merge_feature("feature/1234", "ticket 1234: to tag 2")
    return svc


def test_a_release_checked_by_tcp_dockers_healthcheck_and_a_command(deploy, make_service):
    _release_v2(
        deploy,
        make_service,
        "api",
        lambda svc: {
            "tcp": f"127.0.0.1:{svc.port}",
            "docker": True,
            "command": ["cat", "/www/version"],
            "timeout": 60,
        },
        compose={"healthcheck": HEALTHCHECK},
    )
    run = engine.run(deploy.prod, "1234")
    assert run.rc == 0, run
    migrated = [e for e in run.events if e["event"] == "step" and e["step"] == "test_migrate"]
    assert migrated[0]["health"].startswith("healthy by tcp, docker, command"), migrated
    checked = [e for e in run.events if e["event"] == "step" and e["step"] == "test_health"]
    assert checked[0]["health"].startswith("healthy by tcp, docker, command"), checked
    report = _report(run)
    assert "tcp 127.0.0.1:" in report and ": accepted" in report
    assert re.search(r"docker \S+-api-1: healthy", report)
    assert "command cat /www/version: exit 0: 2" in report, "the command's own output"


def test_every_replica_is_checked_and_named(deploy, make_service):
    svc = _release_v2(
        deploy,
        make_service,
        "api",
        lambda _svc: {"docker": True, "timeout": 60},
        compose={"healthcheck": HEALTHCHECK, "deploy": {"replicas": 2}, "ports": []},
    )
    run = engine.run(deploy.prod, "1234")
    assert run.rc == 0, run
    report = _report(run)
    for n in (1, 2):
        name = f"{svc.project}-api-{n}"
        assert re.search(rf"docker {name}: healthy", report), name
        assert re.search(rf"actual +{name} \(running\): {re.escape(svc.image)}", report), name


def test_a_container_that_exits_ends_the_wait_at_once(deploy, make_service):
    v1_running_v2_merged(deploy, make_service, ("api",), v2_health={"api": "crash"}, timeout=120)
    began = time.monotonic()
    run = engine.run(deploy.prod, "1234")
    took = time.monotonic() - began
    assert run.rc == 1, run
    assert took < 60, f"the wait ran toward its 120 s timeout: {took:.0f} s"
    assert "api did not become healthy" in run.output
    assert re.search(r"container \S+-api-1 exited with code 3", run.output), run
    failed = run.event("migrate", "failed")
    assert (failed["service"], failed["step"]) == ("api", "health")
    assert "crashing at start" in _report(run), "the container's log tail is in the report"


def test_without_a_healthcheck_the_docker_kind_says_so(deploy, make_service):
    _release_v2(deploy, make_service, "api", lambda _svc: {"docker": True, "timeout": 3})
    run = engine.run(deploy.prod, "1234")
    assert run.rc == 1, run
    assert "no HEALTHCHECK" in run.output, run
