"""A deploy world for benchmarks: origin, prod, N busybox services running on prod.

Built with the selftests' own helpers (real git, images made with `docker import`),
labelled with this bench run's id, and removed by that label and by the exact
compose project names when the world closes. Compose is the one the engine detects
(`World.compose`), never a bare `docker compose`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import docker

from release_phases.host import compose as compose_cli
from release_phases.host.shell import render
from selftests.support.deployrepo import DeployRepo, Service, free_port
from selftests.support.images import LABEL, ImageSpec, build


class World:
    """``host_network``: the services listen on the host's network, each on its own port,
    so fifty of them need no fifty compose networks (the engine has a few dozen
    address pools). ``volume``: each service has a named volume, backed up."""

    def __init__(self, services: int, *, host_network: bool = False, volume: bool = False) -> None:
        self.run_id = f"bench{uuid.uuid4().hex[:6]}"
        self.compose = compose_cli.detect()
        self.client = docker.from_env()
        self.root = Path(tempfile.mkdtemp(prefix=f"rp-{self.run_id}-"))
        self.deploy = DeployRepo(self.root, self.run_id)
        self.repository = f"rp{self.run_id}/svc"
        build(self.client, ImageSpec(self.repository, "1"), self.run_id)
        self.services = [
            Service(
                name=f"s{i}",
                project=f"rp{self.run_id}-s{i}",
                port=free_port(),
                repository=self.repository,
                volumes=(f"rp{self.run_id}-data{i}",) if volume else (),
            )
            for i in range(services)
        ]
        for svc in self.services if host_network else ():
            svc.compose = {
                "network_mode": "host",
                "ports": [],
                "command": [
                    "/bin/busybox",
                    "httpd",
                    "-f",
                    "-p",
                    f"127.0.0.1:{svc.port}",
                    "-h",
                    "/www",
                ],
            }
        for svc in self.services:
            self.deploy.write_service(svc)
        self.deploy.commit("services at tag 1")
        self.deploy.push()
        self.deploy.clone_prod()
        for svc in self.services:
            compose = self.deploy.prod / "packages" / svc.name / "compose.yaml"
            subprocess.run(
                [*self.compose.prefix, "-f", str(compose), "up", "-d"],
                check=True,
                capture_output=True,
            )
        self.tickets = 0

    def compose_env(self) -> dict[str, str]:
        """The environment naming this world's Compose for a script (`by_hand.sh`): the
        engine's own override variable, a shell-quoted command."""
        return {compose_cli.OVERRIDE_ENV: render(self.compose.prefix)}

    def env(self) -> dict[str, str]:
        """The environment every contender (engine, script, playbook) runs in.

        This world's Compose is named, as the engine's override variable: the script
        is told which Compose to run, and so is the engine (on a deploy host with the
        Compose plugin the engine finds it first; here it would try Debian's Compose v1,
        a Python program, on every run). Python writes its bytecode, as it does by
        default on a deploy host: this machine's shells set PYTHONDONTWRITEBYTECODE,
        which makes every run of the engine compile its modules, and pytest rewrite the
        asserts of its plugin's, again (about 0.25 s a release).
        """
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        return {**env, **self.compose_env()}

    def volume_dir(self, svc: Service) -> Path:
        """The host directory holding the service's volume (we are root here)."""
        name = self.client.volumes.get(f"{svc.project}_{svc.volumes[0]}").name
        return Path(self.client.api.inspect_volume(name)["Mountpoint"])

    def merge_next(self) -> str:
        """Merge a ticket moving every service to a new tag (the same image, tagged anew)."""
        self.tickets += 1
        tag = str(self.tickets + 1)
        self.client.images.get(f"{self.repository}:1").tag(self.repository, tag)
        for svc in self.services:
            svc.tag = tag
            self.deploy.write_service(svc)
        ticket = str(100 + self.tickets)
        self.deploy.merge_feature(f"feature/{ticket}", f"ticket {ticket}: tag {tag}")
        return ticket

    def close(self) -> None:
        label = f"{LABEL}={self.run_id}"
        for c in self.client.containers.list(all=True, filters={"label": label}):
            c.remove(force=True, v=True)
        for svc in self.services:
            project = {"label": f"com.docker.compose.project={svc.project}"}
            for n in self.client.networks.list(filters=project):
                n.remove()
            for v in self.client.volumes.list(filters=project):
                v.remove(force=True)
        for img in self.client.images.list(all=True, filters={"label": label}):
            self.client.images.remove(img.id, force=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> World:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
