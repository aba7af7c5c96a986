"""Health of one deployed service: its manifest's checks, made against what runs now.

Migrate waits with them after a recreate, verify checks with them (with backoff),
and revert waits and checks with them after a restore, so a kind declared in a
manifest means the same in every phase. While waiting, a watch on the service's
containers ends the wait at once when one exits or restarts: waiting out the
timeout would only delay the same answer.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from release_phases import health, progress
from release_phases.context import ReleaseContext
from release_phases.errors import ReleaseError
from release_phases.health import Check, HealthResult
from release_phases.host import QUERY_TIMEOUT
from release_phases.host import swarm as swarm_host
from release_phases.host.compose import LOG_TAIL, ComposeProject
from release_phases.host.shell import INTERRUPTED, Result, render
from release_phases.host.swarm import Swarm
from release_phases.manifest import Health, Manifest
from release_phases.steps import Step

#: Seconds verify (and revert's check) retries before it says unhealthy.
CHECK_BUDGET = 30.0
STOPPED = frozenset({"exited", "dead"})


def describe(declared: Health) -> str:
    """What healthy means for this service, in one line."""
    parts = []
    if declared.endpoint is not None:
        parts.append(f"{declared.endpoint}: expected {declared.expected_code}")
    if declared.tcp is not None:
        parts.append(f"tcp {declared.tcp} accepts a connection")
    if declared.docker:
        parts.append("every container's HEALTHCHECK says healthy")
    if declared.command:
        parts.append(f"`{render(declared.command)}` exits 0 in its first container")
    return "; ".join(parts)


def checks(ctx: ReleaseContext, manifest: Manifest, project: ComposeProject) -> list[Check]:
    """One check per declared kind; Docker's health, one per container. A swarm service
    is first checked for convergence (`swarm_checks`)."""
    if manifest.swarm:
        return swarm_checks(ctx, manifest, project)
    declared = manifest.health
    found: list[Check] = []
    if declared.endpoint is not None:
        found.append(health.HttpCheck(declared.endpoint, declared.expected_code))
    if declared.tcp is not None:
        found.append(health.TcpCheck(*declared.tcp_address))
    if declared.docker:
        engine = ctx.host.engine
        containers = engine.containers_of_all(project.name, project.services)
        for container in containers:

            def status(container_id: str = str(container.id)) -> str | None:
                return engine.state(container_id).health

            found.append(health.DockerHealthCheck(str(container.name), status))
        if not containers:
            found.append(health.DockerHealthCheck(f"(no container of {manifest.service})", _none))
    if declared.command:
        argv = project.exec(project.services[0], declared.command)

        def run(timeout: float, argv: Sequence[str] = argv) -> Result:
            return ctx.host.run(argv, timeout=timeout, check=False)

        found.append(health.CommandCheck(declared.command, run, render(declared.command)))
    return found


def _none() -> str | None:
    return None


class ConvergedCheck:
    """A swarm service has converged: every task of its spec runs (`swarm.convergence`)."""

    kind = "swarm"

    def __init__(self, swarm: Swarm, name: str) -> None:
        self.swarm = swarm
        self.target = name

    def probe(self, timeout: float) -> health.Probe:
        at = health.now()
        began = time.monotonic()
        try:
            found = self.swarm.converged(self.target)
            said, passed = found.said, found.done
        except ReleaseError as exc:
            said, passed = f"cannot read its tasks: {exc.what}", False
        latency = (time.monotonic() - began) * 1000
        return health.Probe(
            at=at, latency_ms=latency, kind=self.kind, target=self.target, passed=passed, said=said
        )


def swarm_checks(ctx: ReleaseContext, manifest: Manifest, project: ComposeProject) -> list[Check]:
    """A swarm service's checks: each of its swarm services converged, then the declared
    kinds. The endpoint and tcp kinds are asked as for compose (a port published on this
    host); `docker` and `command` ask the containers of the tasks meant to run now,
    found again at every probe, since an update replaces them."""
    stack = ctx.stack(project)
    swarm = ctx.host.swarm
    declared = manifest.health
    found: list[Check] = [ConvergedCheck(swarm, name) for name in stack.service_names]
    if declared.endpoint is not None:
        found.append(health.HttpCheck(declared.endpoint, declared.expected_code))
    if declared.tcp is not None:
        found.append(health.TcpCheck(*declared.tcp_address))
    if declared.docker:
        for name in stack.service_names:

            def status(name: str = name) -> str | None:
                return tasks_health(ctx, name)

            found.append(health.DockerHealthCheck(f"tasks of {name}", status))
    if declared.command:
        first = stack.service_names[0]

        def run(timeout: float) -> Result:
            here, _ = swarm.running(first)
            if not here:
                return Result(argv=[], returncode=1, duration=0.0, output=f"no task of {first}")
            argv = swarm_host.exec_argv(here[0].container_id, declared.command)
            return ctx.host.run(argv, timeout=timeout, check=False)

        found.append(health.CommandCheck(declared.command, run, render(declared.command)))
    return found


def tasks_health(ctx: ReleaseContext, name: str) -> str | None:
    """`healthy` when the container of every task meant to run says so; else what the
    first that does not says (`starting`, `unhealthy`, `none`), naming its task."""
    here, elsewhere = ctx.host.swarm.running(name)
    if elsewhere:
        return f"{len(elsewhere)} task(s) on other nodes: their health cannot be read here"
    if not here:
        return f"no task of {name} runs"
    for task in here:
        if not task.container_id:
            return f"{task.label}: no container yet"
        said = ctx.host.engine.state(task.container_id).health
        if said != "healthy":
            return (
                f"{task.label}: {said or 'no HEALTHCHECK (image or compose healthcheck: needed)'}"
            )
    return "healthy"


def _close(found: Sequence[Check]) -> None:
    for check in found:
        if isinstance(check, health.HttpCheck):
            check.close()


def watch(ctx: ReleaseContext, project: ComposeProject, *, swarm: bool = False) -> health.Watch:
    """Says why waiting is pointless: a container of the service exited or restarted; for
    a swarm service, Swarm paused or rolled back its update (a task that exits is
    replaced by Swarm, so it is no reason to stop)."""
    if swarm:
        return swarm_watch(ctx, project)
    engine = ctx.host.engine
    containers = engine.containers_of_all(project.name, project.services)
    restarts = {str(c.id): int(c.attrs.get("RestartCount") or 0) for c in containers}

    def why() -> str:
        import docker.errors

        if INTERRUPTED.is_set():  # a wait in a --parallel thread: the run is stopping
            return "the run was stopped"
        for container_id, before in restarts.items():
            try:
                now = engine.state(container_id)
            except docker.errors.NotFound:  # removed meanwhile: the same answer as exited
                return f"container {container_id[:12]} of {project.name} is gone"
            # Any other error is the engine not answering (a ReleaseError naming it): it
            # ends the wait as itself, not as a container that went away.
            if now.status in STOPPED:
                return f"container {now.name} exited with code {now.exit_code}"
            if now.status == "restarting" or now.restarts > before:
                return f"container {now.name} restarted (last exit code {now.exit_code})"
        return ""

    return why


def swarm_watch(ctx: ReleaseContext, project: ComposeProject) -> health.Watch:
    names = ctx.stack(project).service_names

    def why() -> str:
        if INTERRUPTED.is_set():
            return "the run was stopped"
        for name in names:
            stopped = ctx.host.swarm.converged(name).stopped
            if stopped:
                return stopped
        return ""

    return why


def wait_until_healthy(
    ctx: ReleaseContext, manifest: Manifest, project: ComposeProject, step: Step
) -> HealthResult:
    """Poll every declared check until all pass, a container stops, or the timeout passes.
    Every probe, and when it never became healthy the containers' log tail, goes into
    the report."""
    found = checks(ctx, manifest, project)
    try:
        probed = health.poll(
            found,
            manifest.health.timeout,
            expected_code=manifest.health.expected_code,
            watch=watch(ctx, project, swarm=manifest.swarm),
            on_round=telling(manifest.service),
        )
    finally:
        _close(found)
    told(manifest.service, probed)
    step.detail("health probes", probe_table(probed))
    if not probed.ok:
        keep_logs(ctx, project, step, swarm=manifest.swarm)
    return probed


def check_health(ctx: ReleaseContext, manifest: Manifest, project: ComposeProject) -> HealthResult:
    """Every declared check, retried with exponential backoff within CHECK_BUDGET."""
    found = checks(ctx, manifest, project)
    try:
        probed = health.poll_with_backoff(
            found,
            CHECK_BUDGET,
            expected_code=manifest.health.expected_code,
            on_round=telling(manifest.service),
        )
    finally:
        _close(found)
    told(manifest.service, probed)
    return probed


def telling(service: str) -> health.OnRound:
    """A wait's progress: every few seconds, how long so far and what each check said."""
    every = progress.Every()

    def on_round(elapsed: float, last_round: Sequence[health.Probe]) -> None:
        if every.due(elapsed):
            progress.say(service, progress.waiting(elapsed, last_round))

    return on_round


def told(service: str, result: HealthResult) -> None:
    """The wait's last progress line: how it ended."""
    summary = result.summary
    if result.ok:
        # A summary of several kinds says "healthy by ..." itself.
        line = summary if summary.startswith("healthy") else f"healthy: {summary}"
    else:
        line = f"not healthy: {summary}"
    progress.say(service, line)


def keep_logs(
    ctx: ReleaseContext, project: ComposeProject, step: Step, *, swarm: bool = False
) -> None:
    """The containers' log tail, into the step's report details. When there is none,
    it says why: a container that printed nothing, or none there to print. For a swarm
    service: its tasks, states and errors (`docker service ps --no-trunc`) and its logs."""
    if swarm:
        stack = ctx.stack(project)
        step.detail("tasks", swarm_tasks(ctx, project))
        for key in stack.services:
            argv = stack.logs(key)
            result = ctx.host.run(argv, check=False, timeout=QUERY_TIMEOUT)
            step.detail(
                f"service logs of {stack.service_name(key)} (last {LOG_TAIL} lines)",
                f"$ {render(argv)}\n{result.output or '(nothing)'}",
            )
        return
    who = step.service or " ".join(project.services)
    tail = ctx.host.logs(project)
    if not tail.strip():
        tail = printed_nothing(ctx, project)
    step.detail(f"container logs of {who} (last {LOG_TAIL} lines)", tail)


def swarm_tasks(ctx: ReleaseContext, project: ComposeProject) -> str:
    """The tasks of a swarm service's stack, with their states and whole errors."""
    stack = ctx.stack(project)
    shown = []
    for key in stack.services:
        argv = stack.ps(key)
        result = ctx.host.run(argv, check=False, timeout=QUERY_TIMEOUT)
        shown.append(f"$ {render(argv)}\n{result.output.rstrip()}")
    return "\n".join(shown)


def printed_nothing(ctx: ReleaseContext, project: ComposeProject) -> str:
    """What an empty log tail means: which containers there are, and in what state."""
    try:
        containers = ctx.host.engine.containers_of_all(project.name, project.services)
    except ReleaseError as exc:
        return f"`compose logs` printed nothing, and the engine did not answer: {exc.what}"
    if not containers:
        return (
            f"no container of {' '.join(project.services)} exists in project {project.name}:"
            " there is no log to read"
        )
    states = ", ".join(
        f"{c.name} {'created, never started' if c.status == 'created' else c.status}"
        for c in containers
    )
    many = len(containers) > 1
    return f"the container{'s' if many else ''} printed nothing ({states})"


def probe_table(result: HealthResult) -> str:
    """Every probe, a line each: when, what it heard (and of what), how long it took;
    a run of the same answer folded (`health.fold`) between its first and last probe."""
    rows = [f"{'time':<29} {'outcome':<40} latency"]
    for line in health.fold(result.probes):
        p = line.sample if isinstance(line, health.Folded) else line
        outcome = line.outcome
        if p.kind != "endpoint":
            outcome = f"{p.kind} {p.target}: {outcome}"
        if isinstance(line, health.Folded):
            low, high = line.latency_ms
            span = f"{low:.0f} ms" if round(low) == round(high) else f"{low:.0f}-{high:.0f} ms"
            rows.append(f"{'  ...':<29} {outcome:<40} {span}")
        else:
            rows.append(f"{p.at:<29} {outcome:<40} {p.latency_ms:.0f} ms")
    rows.append(result.summary)
    return "\n".join(rows)
