"""Services with `engine: swarm`: released as Docker Swarm stacks, without downtime.

The pure decisions (has a service converged, which tasks are elsewhere) and the
commands are tested as data; the rest on a single-node swarm the session makes
(selftests/support/swarm.py), through a proxy on 127.0.0.1 that reaches the tasks
by the stack network's DNS (`endpoint_mode: dnsrr`), as on an engine without IPVS.
"""

from __future__ import annotations

import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import docker
import pytest

from release_phases import manifest
from release_phases.errors import ConfigError
from release_phases.host.swarm import (
    Service,
    SwarmStack,
    Task,
    convergence,
    remote_tasks,
    service_of,
    task_of,
)
from selftests.conftest import RUN_ID, Images
from selftests.support import scenario, swarm
from selftests.support.deployrepo import DeployRepo, free_port
from selftests.support.deployrepo import Service as Svc
from selftests.support.engine import run
from selftests.support.images import HEALTH_PATH, HTTP_PORT, LABEL

# -- pure: convergence, tasks, commands ----------------------------------------------------


def _task(slot: int, image: str = "app:2", state: str = "running", desired: str = "running",
          error: str = "", node: str = "n1") -> Task:  # fmt: skip
    return Task(f"t{slot}{state}", slot, image, state, desired, error, f"c{slot}", node)


def _service(replicas: int | None = 2, update: str = "completed", message: str = "") -> Service:
    return Service("s_web", "app:2", replicas, update, message)


CONVERGENCE = [
    # (what, service, tasks, done, stopped, said contains)
    ("every task runs the new image", _service(), [_task(1), _task(2)], True, False, "2/2"),
    ("a fresh service, no update yet", _service(update=""), [_task(1), _task(2)], True, False, ""),
    (
        "an update under way",
        _service(update="updating"),
        [_task(1), _task(2), _task(2, "app:1")],
        False,
        False,
        "updating",
    ),
    (
        "a task still on the old image",
        _service(),
        [_task(1), _task(2, "app:1")],
        False,
        False,
        "still on app:1",
    ),
    (
        "a task not started yet",
        _service(),
        [_task(1), _task(2, state="starting")],
        False,
        False,
        "1/2",
    ),
    ("one task short", _service(), [_task(1)], False, False, "1/2"),
    (
        "the failed tasks are told",
        _service(),
        [_task(1), _task(2, state="failed", desired="shutdown", error="task: non-zero exit (3)")],
        False,
        False,
        "non-zero exit (3)",
    ),
    (
        "Swarm paused the update",
        _service(update="paused", message="update paused due to failure"),
        [_task(1), _task(2)],
        False,
        True,
        "update paused",
    ),
    (
        "Swarm rolled it back",
        _service(update="rollback_completed"),
        [_task(1, "app:1"), _task(2, "app:1")],
        False,
        True,
        "rollback_completed",
    ),
    (
        "a global service: every task meant to run",
        _service(None),
        [_task(1), _task(2)],
        True,
        False,
        "2/2",
    ),
    ("no such service", None, [], False, False, "no service"),
    (
        "old tasks shut down are not counted",
        _service(),
        [_task(1), _task(2), _task(3, "app:1", state="shutdown", desired="shutdown")],
        True,
        False,
        "2/2",
    ),
]


@pytest.mark.parametrize(
    ("service", "tasks", "done", "stopped", "said"),
    [case[1:] for case in CONVERGENCE],
    ids=[case[0] for case in CONVERGENCE],
)
def test_convergence(service, tasks, done, stopped, said) -> None:
    found = convergence(service, tasks, "s_web")
    assert found.done is done, found
    assert bool(found.stopped) is stopped, found
    assert said in found.said


def test_a_task_and_a_service_are_read_from_the_engines_json() -> None:
    task = task_of(
        {
            "ID": "abc",
            "Slot": 2,
            "NodeID": "n1",
            "DesiredState": "running",
            "Spec": {"ContainerSpec": {"Image": "app:2@sha256:0123"}},
            "Status": {"State": "rejected", "Err": "No such image", "ContainerStatus": {}},
        }
    )
    assert (task.image, task.state, task.error, task.container_id) == (
        "app:2",
        "rejected",
        "No such image",
        "",
    )
    service = service_of(
        {
            "Spec": {
                "Name": "s_web",
                "Mode": {"Replicated": {"Replicas": 3}},
                "TaskTemplate": {"ContainerSpec": {"Image": "app:2"}},
            },
            "UpdateStatus": {"State": "paused", "Message": "update paused"},
        }
    )
    assert service == Service("s_web", "app:2", 3, "paused", "update paused")
    assert service_of({"Spec": {"Mode": {"Global": {}}}}).replicas is None


def test_tasks_on_other_nodes_are_named() -> None:
    tasks = [_task(1, node="n1"), _task(2, node="n2"), _task(3, desired="shutdown", node="n3")]
    assert [t.slot for t in remote_tasks(tasks, "n1")] == [2]


def test_the_stacks_commands() -> None:
    stack = SwarmStack("web", Path("/d/packages/web/compose.yaml"), ("web", "worker"), "never")
    assert stack.deploy() == [
        "docker",
        "stack",
        "deploy",
        "--compose-file",
        "/d/packages/web/compose.yaml",
        "--resolve-image",
        "never",
        "web",
    ]
    # Neither --prune nor --with-registry-auth: a release removes no service, sends no
    # credentials.
    assert not {"--prune", "--with-registry-auth"} & set(stack.deploy())
    assert stack.service_names == ("web_web", "web_worker")
    assert stack.ps("worker") == ["docker", "service", "ps", "--no-trunc", "web_worker"]
    assert stack.scale(0)[-2:] == ["web_web=0", "web_worker=0"]


# -- real: a single-node swarm ---------------------------------------------------------------


@pytest.fixture(scope="session")
def swarm_node(docker_client: docker.DockerClient):
    with swarm.single_node(docker_client) as how:
        yield how


@pytest.fixture
def stacks(docker_client: docker.DockerClient, swarm_node: str, images: Images):
    """Make swarm services whose stack is unique to this test; removed when it ends."""
    test_id = uuid.uuid4().hex[:6]
    made: list[str] = []
    proxies: list = []

    def make(
        base: str, *, order: str = "start-first", volumes: tuple[str, ...] = (), timeout=40
    ) -> Svc:
        images.get(base, "1")
        name = f"rp{RUN_ID}-{test_id}-{base}"
        made.append(name)
        port = free_port()
        return Svc(
            name=name,
            project=name,
            port=port,
            repository=images.repository(base),
            containers=("web",),
            volumes=volumes,
            engine="swarm",
            health={
                "endpoint": f"http://127.0.0.1:{port}{HEALTH_PATH}",
                "docker": True,
                "timeout": timeout,
            },
            compose={
                "networks": ["net"],
                "stop_grace_period": "1s",
                "healthcheck": {
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
                    "retries": 2,
                },
                "deploy": {
                    "replicas": 2,
                    "endpoint_mode": "dnsrr",
                    "update_config": {"order": order, "parallelism": 1, "monitor": "2s"},
                },
            },
            top={
                "networks": {
                    "net": {"driver": "overlay", "attachable": True, "labels": {LABEL: RUN_ID}}
                }
            },
        )

    def proxy(svc: Svc) -> None:
        """The proxy to the service's tasks, on svc.port, once its stack runs."""
        proxies.append(
            swarm.start_proxy(
                docker_client,
                image=images.get("proxy", "1"),
                network=f"{svc.project}_net",
                target=f"{svc.project}_web",
                port=svc.port,
                run_id=RUN_ID,
            )
        )

    make.proxy = proxy  # type: ignore[attr-defined]
    yield make
    for container in proxies:
        container.remove(force=True)
    for name in made:
        swarm.remove_stack(docker_client, name)


def _deploy_by_hand(deploy: DeployRepo, svc: Svc) -> None:
    """The first deployment, as README says: `docker stack deploy` in the prod clone."""
    compose_file = deploy.prod / "packages" / svc.name / "compose.yaml"
    argv = SwarmStack(svc.project, compose_file, ("web",), "never").deploy()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def _answers(url: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.read().decode().strip()
        except OSError as exc:
            last = str(exc)
        time.sleep(0.2)
    raise AssertionError(f"{url} never answered: {last}")


def _on_prod_at_v1(deploy: DeployRepo, stacks, svc: Svc) -> None:
    deploy.write_service(svc)
    deploy.commit(f"{svc.name} at tag 1")
    deploy.push()
    deploy.clone_prod()
    _deploy_by_hand(deploy, svc)
    stacks.proxy(svc)
    assert _answers(svc.endpoint).endswith(f"{svc.repository}:1")


def _merge_v2(deploy: DeployRepo, images: Images, svc: Svc, health: str = "ok") -> None:
    svc.tag = "2" if health == "ok" else f"2-{health}"
    images.get(svc.name.rsplit("-", 1)[1], svc.tag, health)
    deploy.write_service(svc)
    deploy.merge_feature(f"feature/{svc.tag}", f"ticket: {svc.name} to {svc.tag}")


def _task_image_ids(client: docker.DockerClient, svc: Svc) -> set[str]:
    tasks = client.api.tasks(filters={"service": f"{svc.project}_web", "desired-state": "running"})
    ids = {t["Status"]["ContainerStatus"]["ContainerID"] for t in tasks}
    return {client.containers.get(i).attrs["Image"] for i in ids}


@pytest.mark.docker
@pytest.mark.swarm
def test_a_start_first_swarm_release_loses_no_request(
    deploy: DeployRepo, stacks, images: Images, docker_client: docker.DockerClient, capsys
) -> None:
    svc = stacks("zd")
    _on_prod_at_v1(deploy, stacks, svc)
    _merge_v2(deploy, images, svc)
    with swarm.Poller(svc.endpoint) as polled:
        time.sleep(1)  # some requests before the update, to the old tasks
        done = run(deploy.prod, "ZD-1")
        time.sleep(1)
    with capsys.disabled():
        print(f"\nswarm start-first release: {polled}")
    assert done.rc == 0, done
    assert done.state.phase == "verify" and done.state.finished, done
    assert polled.failed == 0, polled
    assert polled.total > 50, polled
    # It really was updated under the poller: both versions answered it.
    assert {f"ok {svc.repository}:1", f"ok {svc.repository}:2"} <= polled.bodies, polled.bodies
    # What prepare recorded is what the tasks ran, by id; what runs now is v2's id.
    assert done.state.images == {svc.name: images.built[f"{svc.repository}:1"]}
    assert _task_image_ids(docker_client, svc) == {images.built[f"{svc.repository}:2"]}
    assert "2/2 tasks running" in done.output or "healthy" in done.output


@pytest.mark.docker
def test_the_same_release_of_a_stop_first_compose_service_has_an_outage(
    deploy: DeployRepo, make_service, capsys
) -> None:
    services = scenario.running_on_prod(deploy, make_service, ("zdc",))
    svc = services["zdc"]
    _answers(svc.endpoint)
    svc.tag = "2"
    make_service("zdc", "2")
    deploy.write_service(svc)
    deploy.merge_feature("feature/zdc", "ticket: zdc to 2")
    with swarm.Poller(svc.endpoint) as polled:
        time.sleep(1)
        done = run(deploy.prod, "ZD-2")
        time.sleep(1)
    with capsys.disabled():
        print(f"\ncompose stop-first release: {polled}")
    assert done.rc == 0, done
    assert polled.failed > 0, polled
    assert polled.window > 0.1, polled


@pytest.mark.docker
@pytest.mark.swarm
def test_a_swarm_release_that_never_converges_fails_with_its_tasks(
    deploy: DeployRepo, stacks, images: Images
) -> None:
    svc = stacks("bad", timeout=15)
    _on_prod_at_v1(deploy, stacks, svc)
    _merge_v2(deploy, images, svc, health="error")
    done = run(deploy.prod, "BAD-1")
    assert done.rc == 1, done
    assert "did not converge and become healthy" in done.output, done
    # The tasks with their states, as `docker service ps --no-trunc` says them.
    assert "docker service ps --no-trunc" in done.output, done
    assert f"{svc.repository}:2-error" in done.output, done
    # start-first: the old tasks never stopped, so the service still answers.
    assert _answers(svc.endpoint, timeout=5).endswith(f"{svc.repository}:1")
    report = next((deploy.prod / "reports").glob("BAD-1-release-*.html")).read_text()
    assert "service logs of" in report


@pytest.mark.docker
@pytest.mark.swarm
def test_a_swarm_release_is_reverted_with_its_image_and_volume(
    deploy: DeployRepo, stacks, images: Images, docker_client: docker.DockerClient
) -> None:
    svc = stacks("rv", volumes=("data",))
    svc.backup = {"volumes": ["data"]}
    _on_prod_at_v1(deploy, stacks, svc)
    volume = f"{svc.project}_data"
    _write_volume(docker_client, images, volume, "before the release\n")
    _merge_v2(deploy, images, svc)
    done = run(deploy.prod, "RV-1")
    assert done.rc == 0, done
    assert done.state.backups.get(svc.name), done
    _write_volume(docker_client, images, volume, "written by version 2\n")
    # The tag moved meanwhile: the revert must point it back at the id that ran.
    v1_id = images.built[f"{svc.repository}:1"]
    images.get("rv", "1", rebuild=True)
    assert images.built[f"{svc.repository}:1"] != v1_id
    reverted = run(deploy.prod, "RV-1", mode="revert")
    assert reverted.rc == 0, reverted
    assert "REVERTED" in reverted.output
    assert _read_volume(docker_client, images, volume) == "before the release\n"
    assert _task_image_ids(docker_client, svc) == {v1_id}
    assert _answers(svc.endpoint).endswith(f"{svc.repository}:1")


def _write_volume(client, images: Images, volume: str, text: str) -> None:
    client.containers.run(
        images.get("proxy", "1"),
        ["/bin/busybox", "sh", "-c", f"printf '{text}' > /v/file"],
        volumes={volume: {"bind": "/v"}},
        labels={LABEL: RUN_ID},
        remove=True,
    )


def _read_volume(client, images: Images, volume: str) -> str:
    out = client.containers.run(
        images.get("proxy", "1"),
        ["/bin/busybox", "cat", "/v/file"],
        volumes={volume: {"bind": "/v"}},
        labels={LABEL: RUN_ID},
        remove=True,
    )
    return out.decode()


MANIFESTS = [
    ("engine: swarm", "swarm"),
    ("", "compose"),
    ("engine: swarn", "engine must be one of compose or swarm, got 'swarn'"),
    (
        "engine: swarm\nbackup: {volumes: [data], paths: [/srv], when: stopped}",
        "engine swarm backs up volumes only; backup.paths, backup.when: stopped cannot go",
    ),
    ("engine: swarm\nbackup: {volumes: [data]}", "swarm"),
]


@pytest.mark.parametrize(("extra", "expected"), MANIFESTS)
def test_the_manifests_engine(extra: str, expected: str) -> None:
    text = f'image: {{name: app, tag: "1"}}\nhealth: {{tcp: "127.0.0.1:1"}}\n{extra}\n'
    try:
        found = manifest.parse(
            text, service="web", package_dir=Path("/d"), source="m.yaml", exists=lambda _: True
        ).engine
    except ConfigError as exc:
        found = exc.what
    assert expected in found


@pytest.mark.docker
@pytest.mark.swarm
def test_a_swarm_service_added_by_a_release_is_deployed_and_its_revert_removes_it(
    deploy: DeployRepo, stacks, docker_client: docker.DockerClient
) -> None:
    svc = stacks("add")
    svc.compose["deploy"]["replicas"] = 1  # type: ignore[index]
    # No proxy before the stack's network exists: its tasks' own health says it.
    svc.health = {"docker": True, "timeout": 40}
    deploy.clone_prod()
    base = deploy.dev_repo.head.commit.hexsha
    deploy.write_service(svc)
    deploy.merge_feature("feature/add", "ticket: add a swarm service")
    done = run(deploy.prod, "ADD-1", "--base-sha", base)
    assert done.rc == 0, done
    assert done.state.images == {}, done
    assert docker_client.services.list(filters={"name": f"{svc.project}_web"}), done
    reverted = run(deploy.prod, "ADD-1", mode="revert")
    assert reverted.rc == 0, reverted
    assert not docker_client.services.list(filters={"name": f"{svc.project}_web"})
