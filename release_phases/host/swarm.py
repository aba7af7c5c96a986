"""Docker Swarm: the commands a swarm service's release runs, and what Swarm says of it.

A service whose manifest says `engine: swarm` runs as a stack named after the
service (`docker stack deploy -c FILE STACK`); each of its compose services is the
swarm service `STACK_KEY`, whose tasks run its containers. ``SwarmStack`` builds the
commands as argv lists (run by `Host.run`), ``Swarm`` asks the engine through the
SDK, and the decision "has it converged" is the pure `convergence`, made from the
service and its tasks as the engine lists them.

Choices:
- `stack deploy` is run without `--prune` (a service the file no longer names is
  left running, as a release never removes a compose service either) and without
  `--with-registry-auth` (credentials are not sent to the nodes). It returns once
  the spec is accepted (`--detach` is the default of the CLIs that know it, and
  older ones always return at once): the release waits for convergence itself, so
  the wait has the manifest's timeout and reports its tasks.
- `--resolve-image never` where there is no registry (`release_pull = false`): the
  nodes run the tag as it is on them; else `changed`, which pins a digest only for
  an image whose reference changed.
- Containers of a task are found by Swarm's labels; only those on this node (the
  manager the engine talks to) can be read. A task on another node is named as such.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from release_phases.host.engine import answering

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

STACK_LABEL = "com.docker.stack.namespace"
SERVICE_LABEL = "com.docker.swarm.service.name"
#: The states a task passes through before it runs (docker/swarmkit's api.TaskState).
PENDING = ("new", "allocated", "pending", "assigned", "accepted", "preparing", "ready", "starting")
#: An update that Swarm stopped: it will not converge by waiting.
UPDATE_STOPPED = ("paused", "rollback_started", "rollback_paused", "rollback_completed")
LOG_TAIL = 200


@dataclass(frozen=True)
class SwarmStack:
    """One service's stack: its name, compose file and compose services (keys)."""

    name: str
    file: Path
    services: tuple[str, ...]
    #: `--resolve-image`: `never` without a registry, else `changed`.
    resolve_image: str = "changed"

    def service_name(self, key: str) -> str:
        """The swarm service of compose service ``key``, as `stack deploy` names it."""
        return f"{self.name}_{key}"

    @property
    def service_names(self) -> tuple[str, ...]:
        return tuple(self.service_name(key) for key in self.services)

    def deploy(self, file: Path | None = None) -> list[str]:
        """Create or update the stack from ``file`` (default: its own)."""
        return [
            "docker",
            "stack",
            "deploy",
            "--compose-file",
            str(file or self.file),
            "--resolve-image",
            self.resolve_image,
            self.name,
        ]

    def ps(self, key: str) -> list[str]:
        """Every task of the service, current and past, with its whole error."""
        return ["docker", "service", "ps", "--no-trunc", self.service_name(key)]

    def logs(self, key: str, tail: int = LOG_TAIL) -> list[str]:
        return [
            "docker",
            "service",
            "logs",
            "--no-trunc",
            "--tail",
            str(tail),
            self.service_name(key),
        ]

    def scale(self, replicas: int) -> list[str]:
        """Every service of the stack to ``replicas`` tasks, without waiting for it."""
        return [
            "docker",
            "service",
            "scale",
            "--detach",
            *(f"{name}={replicas}" for name in self.service_names),
        ]

    def remove(self) -> list[str]:
        """The whole stack: services and networks (volumes stay)."""
        return ["docker", "stack", "rm", self.name]


def exec_argv(container: str, argv: Sequence[str]) -> list[str]:
    """Run ``argv`` in a task's container (on this node), no TTY, no shell."""
    return ["docker", "exec", container, *argv]


# -- what Swarm says, read as the release needs it ------------------------------------


@dataclass(frozen=True)
class Task:
    id: str
    slot: int
    image: str
    #: new ... running, complete, failed, shutdown, rejected, orphaned ...
    state: str
    desired: str
    error: str
    container_id: str
    node: str
    message: str = ""

    @property
    def label(self) -> str:
        return f"task {self.id[:12]}" + (f" (slot {self.slot})" if self.slot else "")


def task_of(attrs: dict[str, Any]) -> Task:
    """A task as the engine lists it (`docker service ps`, the SDK's `tasks()`)."""
    status = attrs.get("Status") or {}
    spec = (attrs.get("Spec") or {}).get("ContainerSpec") or {}
    return Task(
        id=str(attrs.get("ID", "")),
        slot=int(attrs.get("Slot") or 0),
        image=image_ref(str(spec.get("Image", ""))),
        state=str(status.get("State", "")),
        desired=str(attrs.get("DesiredState", "")),
        error=str(status.get("Err") or ""),
        container_id=str((status.get("ContainerStatus") or {}).get("ContainerID") or ""),
        node=str(attrs.get("NodeID") or ""),
        message=str(status.get("Message") or ""),
    )


def image_ref(image: str) -> str:
    """The tag a spec names, without the digest `stack deploy` may have pinned."""
    return image.split("@", 1)[0]


@dataclass(frozen=True)
class Service:
    """A swarm service's spec and update, as far as convergence goes."""

    name: str
    image: str
    #: None: a global service (one task per eligible node).
    replicas: int | None
    #: The update under way or last done: updating, completed, paused, rollback_... ("":
    #: none since the service was created).
    update_state: str = ""
    update_message: str = ""


def service_of(attrs: dict[str, Any]) -> Service:
    spec = attrs.get("Spec") or {}
    container = (spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}
    mode = spec.get("Mode") or {}
    replicated = mode.get("Replicated")
    update = attrs.get("UpdateStatus") or {}
    return Service(
        name=str(spec.get("Name", "")),
        image=image_ref(str(container.get("Image", ""))),
        replicas=int(replicated.get("Replicas") or 0) if replicated is not None else None,
        update_state=str(update.get("State") or ""),
        update_message=str(update.get("Message") or ""),
    )


@dataclass(frozen=True)
class Convergence:
    """Has the service converged: every task of its spec running, and no update left?"""

    done: bool
    #: What stands now, in a line (for the probe table).
    said: str
    #: Why waiting longer is pointless (Swarm paused or rolled back the update), or "".
    stopped: str = ""


def convergence(service: Service | None, tasks: Sequence[Task], name: str = "") -> Convergence:
    """The service has converged when its update (if any) completed and every task Swarm
    means to run (desired `running`) runs the spec's image, as many as it asks for.

    Health is not judged here: Swarm itself holds a start-first update until a new
    task's HEALTHCHECK says healthy, and the manifest's checks run beside this one.
    """
    if service is None:
        return Convergence(False, f"no service {name} (yet)")
    if service.update_state in UPDATE_STOPPED:
        why = f"update {service.update_state}: {service.update_message or 'no message'}"
        return Convergence(False, why, stopped=f"{service.name}: Swarm stopped the {why}")
    meant = [t for t in tasks if t.desired == "running"]
    running = [t for t in meant if t.state == "running" and t.image == service.image]
    failed = [t for t in tasks if t.image == service.image and t.error and t.state != "running"]
    wanted = service.replicas if service.replicas is not None else max(len(meant), 1)
    said = f"{len(running)}/{wanted} tasks running {service.image}"
    behind = [t for t in meant if t.image != service.image]
    if behind:
        said += f"; {len(behind)} still on {', '.join(sorted({t.image for t in behind}))}"
    if failed:
        last = failed[-1]
        said += f"; {last.label} {last.state}: {last.error}"
    if service.update_state == "updating":
        said += "; updating"
    done = (
        service.update_state not in ("updating",)
        and not behind
        and len(running) == wanted
        and len(meant) == wanted
    )
    return Convergence(done, said)


class Swarm:
    """Queries of the engine's swarm, through the SDK client the host already made."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client

    @cached_property
    def _info(self) -> dict[str, Any]:
        info: dict[str, Any] = self.client.info().get("Swarm") or {}
        return info

    @answering
    def is_manager(self) -> bool:
        """Is the engine a swarm manager (stacks can be deployed through it)?"""
        return bool(self._info.get("ControlAvailable"))

    @property
    @answering
    def node_id(self) -> str:
        """This node: where the containers the engine lists run."""
        return str(self._info.get("NodeID") or "")

    @answering
    def service(self, name: str) -> Service | None:
        import docker.errors

        try:
            # The SDK's low-level calls carry no types; these return the engine's JSON.
            attrs: dict[str, Any] = self.client.api.inspect_service(name)  # type: ignore[no-untyped-call]
        except docker.errors.NotFound:
            return None
        return service_of(attrs)

    @answering
    def tasks(self, name: str) -> list[Task]:
        """Every task of the service Swarm still keeps, oldest first."""
        import docker.errors

        try:
            found: list[dict[str, Any]] = self.client.api.tasks(  # type: ignore[no-untyped-call]
                filters={"service": name}
            )
        except docker.errors.NotFound:
            return []
        ordered = sorted(found, key=lambda t: (str(t.get("CreatedAt", "")), str(t.get("ID"))))
        return [task_of(t) for t in ordered]

    @answering
    def stack_services(self, stack: str) -> list[str]:
        """The names of the swarm services of a stack ([] when there is no such stack)."""
        if not self.is_manager():
            return []
        found: list[dict[str, Any]] = self.client.api.services(  # type: ignore[no-untyped-call]
            filters={"label": f"{STACK_LABEL}={stack}"}
        )
        return sorted(str((s.get("Spec") or {}).get("Name", "")) for s in found)

    def converged(self, name: str) -> Convergence:
        return convergence(self.service(name), self.tasks(name), name)

    @answering
    def containers(self, stack: str, service: str) -> list[Container]:
        """The containers of the service's tasks on this node, stopped ones too."""
        return self.client.containers.list(
            all=True, filters={"label": [f"{STACK_LABEL}={stack}", f"{SERVICE_LABEL}={service}"]}
        )

    def running(self, name: str) -> tuple[list[Task], list[Task]]:
        """The tasks Swarm means to run: those whose container is on this node, and
        those elsewhere (their containers cannot be read from here)."""
        meant = [t for t in self.tasks(name) if t.desired == "running"]
        here = [t for t in meant if t.node == self.node_id or not self.node_id]
        return here, [t for t in meant if t not in here]


def remote_tasks(tasks: Sequence[Task], node_id: str) -> list[Task]:
    """Tasks meant to run on a node other than ``node_id``."""
    return [t for t in tasks if t.desired == "running" and t.node and t.node != node_id]
