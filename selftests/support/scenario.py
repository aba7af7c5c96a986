"""The usual starting point: prod runs services at tag 1, origin has a merge to tag 2."""

from __future__ import annotations

import subprocess

from selftests.support import composecli
from selftests.support.deployrepo import DeployRepo, Service


def up(deploy: DeployRepo, svc: Service) -> None:
    """Start a service on prod the way it ran before the release."""
    compose_file = deploy.prod / "packages" / svc.name / "compose.yaml"
    done = subprocess.run(
        composecli.argv("-f", str(compose_file), "up", "-d"),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"compose up of {svc.name} failed:\n{done.stdout}{done.stderr}"


def running_on_prod(
    deploy: DeployRepo, make_service, names: tuple[str, ...], **service_kw
) -> dict[str, Service]:
    """Services at tag 1 on origin, cloned to prod and running there."""
    services = {name: make_service(name, **service_kw) for name in names}
    for svc in services.values():
        deploy.write_service(svc)
    deploy.commit("services at tag 1")
    deploy.push()
    deploy.clone_prod()
    for svc in services.values():
        up(deploy, svc)
    return services


def v1_running_v2_merged(
    deploy: DeployRepo,
    make_service,
    names: tuple[str, ...] = ("api", "web"),
    *,
    v2_health: dict[str, str] | None = None,
    v2_tag: dict[str, str] | None = None,
    files: dict[str, str] | None = None,
    ticket: str = "1234",
    **service_kw,
) -> dict[str, Service]:
    services = running_on_prod(deploy, make_service, names, **service_kw)
    for name, svc in services.items():
        health = (v2_health or {}).get(name, "ok")
        # Images are shared by the session: a tag stands for one behaviour only.
        svc.tag = (v2_tag or {}).get(name) or ("2" if health == "ok" else f"2-{health}")
        if svc.tag != "missing":
            make_service(name, svc.tag, health)
        deploy.write_service(svc)
    for path, text in (files or {}).items():
        deploy.write(path, text)
    deploy.merge_feature(f"feature/{ticket}", f"ticket {ticket}: services to tag 2")
    return services


def container(client, svc: Service, name: str | None = None):
    """The one container compose runs for the service (or its `name` container)."""
    found = client.containers.list(
        all=True,
        filters={
            "label": [
                f"com.docker.compose.project={svc.project}",
                f"com.docker.compose.service={name or svc.name}",
            ]
        },
    )
    assert len(found) == 1, found
    return found[0]


def web_on_prod(deploy: DeployRepo, make_service) -> Service:
    """A web service on origin and cloned to prod (not started)."""
    web = make_service("web")
    deploy.write_service(web)
    deploy.commit("add web")
    deploy.push()
    deploy.clone_prod()
    return web
