"""A single-node Docker Swarm for the selftests, and what runs around a stack in them.

The session's swarm is made only when the engine is in none: `docker swarm init` on
127.0.0.1 at the start, `docker swarm leave --force` at the end, and the
`docker_gwbridge` network that init made is removed again, so a machine that was
not a swarm manager is left as it was. An engine that already is a manager is used
as it is and left so.

The proxy: on an engine without IPVS (as on the machine these tests were written
on) neither the ingress routing mesh nor a service's virtual IP carries traffic.
What does is `endpoint_mode: dnsrr`, where the stack network's DNS answers
`tasks.<service>` with the running tasks' addresses, reached from a container on
that network. The proxy is such a container, published on 127.0.0.1: busybox's
`nc -ll` runs one `nc` per connection, which resolves `tasks.<service>` afresh, so
a task Swarm has taken out of the DNS gets no new connection; a connection refused
(a task going away between the answer and the connect) is tried once more.
"""

from __future__ import annotations

import contextlib
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field

import docker
import docker.errors
import pytest

from selftests.support.images import HTTP_PORT, LABEL

STACK_LABEL = "com.docker.stack.namespace"
GWBRIDGE = "docker_gwbridge"


def _network(client: docker.DockerClient, name: str) -> docker.models.networks.Network | None:
    # `names` filters by part of the name: keep the exact one only.
    found = [n for n in client.networks.list(names=[name]) if n.name == name]
    return found[0] if found else None


@contextlib.contextmanager
def single_node(client: docker.DockerClient) -> Iterator[str]:
    """A swarm manager for the session; yields how it was found (`made` or `was`)."""
    info = client.info().get("Swarm") or {}
    state = info.get("LocalNodeState")
    if state == "active" and info.get("ControlAvailable"):
        yield "was"
        return
    if state != "inactive":
        pytest.skip(f"this engine is in a swarm as a worker or in state {state!r}: not touched")
    had_gwbridge = _network(client, GWBRIDGE) is not None
    client.swarm.init(advertise_addr="127.0.0.1")
    try:
        yield "made"
    finally:
        client.swarm.leave(force=True)
        bridge = None if had_gwbridge else _network(client, GWBRIDGE)
        if bridge is not None:
            with contextlib.suppress(docker.errors.APIError):
                bridge.remove()


def remove_stack(client: docker.DockerClient, stack: str, timeout: float = 60) -> None:
    """Everything of exactly this stack: its services, then (once their containers are
    gone) its networks and volumes."""
    for service in client.services.list(filters={"label": f"{STACK_LABEL}={stack}"}):
        with contextlib.suppress(docker.errors.NotFound):
            service.remove()
    label = {"label": f"{STACK_LABEL}={stack}"}
    deadline = time.monotonic() + timeout
    # Sparse: a full list inspects each container, and fails on one Swarm removes between
    # the listing and its inspection (seen in a CI run).
    while client.containers.list(all=True, filters=label, sparse=True) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.3)
    for container in client.containers.list(all=True, filters=label, sparse=True):
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)
    for network in client.networks.list(filters=label):
        with contextlib.suppress(docker.errors.NotFound):
            network.remove()
    for volume in client.volumes.list(filters=label):
        with contextlib.suppress(docker.errors.NotFound):
            volume.remove(force=True)


def start_proxy(
    client: docker.DockerClient, *, image: str, network: str, target: str, port: int, run_id: str
) -> docker.models.containers.Container:
    """The proxy to `tasks.<target>:HTTP_PORT`, on ``network``, at 127.0.0.1:``port``."""
    upstream = f"/bin/busybox nc tasks.{target} {HTTP_PORT}"
    return client.containers.run(
        image,
        entrypoint=["/bin/busybox"],
        command=[
            "nc",
            "-ll",
            "-p",
            str(HTTP_PORT),
            "-e",
            "/bin/busybox",
            "sh",
            "-c",
            # A refused connect reads nothing from stdin, so the second try gets it whole.
            f"{upstream} || {upstream}",
        ],
        network=network,
        ports={f"{HTTP_PORT}/tcp": ("127.0.0.1", port)},
        labels={LABEL: run_id},
        detach=True,
    )


@dataclass
class Poller:
    """GETs ``url`` every ``every`` seconds in a thread until stopped; counts what failed
    and how long the longest run of failures lasted (the outage window)."""

    url: str
    every: float = 0.02
    timeout: float = 1.0
    ok: int = 0
    failed: int = 0
    bodies: set[str] = field(default_factory=set)
    #: (start, end) of each run of failed requests, in monotonic seconds.
    outages: list[tuple[float, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def total(self) -> int:
        return self.ok + self.failed

    @property
    def window(self) -> float:
        """The longest outage, in seconds (0 when nothing failed)."""
        return max((end - start for start, end in self.outages), default=0.0)

    def _run(self) -> None:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        down_since: float | None = None
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                with opener.open(self.url, timeout=self.timeout) as response:
                    self.bodies.add(response.read().decode().strip())
                self.ok += 1
                if down_since is not None:
                    self.outages.append((down_since, began))
                    down_since = None
            except (OSError, urllib.error.URLError) as exc:
                self.failed += 1
                if len(self.errors) < 5:
                    self.errors.append(str(exc))
                if down_since is None:
                    down_since = began
            self._stop.wait(max(0.0, self.every - (time.monotonic() - began)))
        if down_since is not None:
            self.outages.append((down_since, time.monotonic()))

    def __enter__(self) -> Poller:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()

    def __str__(self) -> str:
        return (
            f"{self.failed} of {self.total} requests failed, outage window {self.window:.2f} s"
            + (f" (first errors: {self.errors[:2]})" if self.errors else "")
        )
