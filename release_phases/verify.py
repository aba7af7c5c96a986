"""Phase 4, verify: facts about what runs, compared with what the manifest asks for.

Checks read like sentences (`running.image_id == expected.image_id`); how each
fact was fetched stays in this module. Every check runs even when another has
failed, so the report gives the whole picture.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from release_phases import health, probing
from release_phases.context import ReleaseContext
from release_phases.errors import ConfigError, ReleaseError
from release_phases.host.compose import ComposeProject
from release_phases.manifest import Manifest


@dataclass(frozen=True)
class ServiceUnderTest:
    """What a service's e2e tests get from the `e2e` fixture."""

    service: str
    manifest: Manifest

    @property
    def endpoint(self) -> str:
        endpoint = self.manifest.health.endpoint
        if endpoint is None:
            raise ConfigError(
                f"{self.manifest.source}: the e2e tests of {self.service} use its endpoint, "
                "and health.endpoint is not declared",
                next_command=f"declare health.endpoint in {self.manifest.source}",
            )
        return endpoint

    @property
    def base_url(self) -> str:
        """`scheme://host:port` of the health endpoint."""
        parts = urlsplit(self.endpoint)
        return f"{parts.scheme}://{parts.netloc}"


@dataclass(frozen=True)
class RunningImage:
    container: str
    configured: str
    image_id: str
    status: str


def running_images(ctx: ReleaseContext, service: str) -> list[RunningImage]:
    manifest = ctx.manifest(service)
    project = ctx.project(manifest)
    if manifest.swarm:
        return [r for key in project.services for r in task_images(ctx, project, key)]
    return [
        RunningImage(str(c.name), c.attrs["Config"]["Image"], c.attrs["Image"], c.status)
        for c in ctx.host.engine.containers_of_all(project.name, project.services)
    ]


def task_images(ctx: ReleaseContext, project: ComposeProject, key: str) -> list[RunningImage]:
    """What each task Swarm means to run of compose service ``key`` runs: the image its
    spec names, and the id of its container's image. A task on another node, or not
    started yet, has no container to read here: its status says so, and a check
    counts it as not running."""
    name = ctx.stack(project).service_name(key)
    here, elsewhere = ctx.host.swarm.running(name)
    found = []
    for task in here:
        label = f"{name} {task.label}"
        if not task.container_id:
            found.append(RunningImage(label, task.image, "(no container yet)", task.state))
            continue
        attrs = ctx.host.engine.inspect(task.container_id)
        container = f"{label} {str(attrs.get('Name', '')).lstrip('/')}"
        state = str((attrs.get("State") or {}).get("Status", "?"))
        found.append(RunningImage(container, task.image, str(attrs.get("Image")), state))
    for task in elsewhere:
        where = f"on node {task.node[:12]}, not readable from this one"
        found.append(RunningImage(f"{name} {task.label}", task.image, "(another node)", where))
    return found


@dataclass(frozen=True)
class Check:
    """One verify check's outcome: a report for the post-mortem, and a verdict."""

    ctx: ReleaseContext
    service: str
    name: str
    ok: bool
    report: str
    problem: str = ""

    def require(self) -> None:
        if self.ok:
            return
        opts = self.ctx.options
        if opts.mode == "release":
            next_command = (
                f"recheck: {opts.command('-k verify')}   or roll back: "
                + opts.command(mode="revert")
            )
        else:
            next_command = f"find out why (see the report), then {opts.command()}"
        raise ReleaseError(
            f"{self.service}: {self.problem}\n{self.report}",
            untouched="the running containers and data: this check changes nothing",
            next_command=next_command,
            step=self.name,
        )


def image(ctx: ReleaseContext, service: str) -> Check:
    """Every container of the service runs image.name:image.tag as that tag resolves now."""
    manifest = ctx.manifest(service)
    expected = manifest.image.ref
    expected_id = ctx.host.engine.image_id(expected) or "(not on this host)"
    running = running_images(ctx, service)
    lines = [f"expected {expected} = {expected_id}"]
    lines += [
        f"actual   {r.container} ({r.status}): {r.configured} = {r.image_id}" for r in running
    ]
    report = "\n".join(lines)
    if not running:
        what = "no task meant to run" if manifest.swarm else "no container"
        return Check(ctx, service, "image", False, report, f"it has {what}")
    stopped = [r.container for r in running if r.status != "running"]
    if stopped:
        problem = f"not running: {', '.join(stopped)}"
        return Check(ctx, service, "image", False, report, problem)
    wrong = [r for r in running if r.configured != expected or r.image_id != expected_id]
    if wrong:
        problem = (
            f"{len(wrong)} container(s) do not run {expected} as it resolves now "
            "(was the tag moved after migrate?)"
        )
        return Check(ctx, service, "image", False, report, problem)
    return Check(ctx, service, "image", True, report)


def health_of(ctx: ReleaseContext, service: str) -> tuple[Check, health.HealthResult]:
    """Every declared health check, retried with exponential backoff."""
    manifest = ctx.manifest(service)
    result = probing.check_health(ctx, manifest, ctx.project(manifest))
    report = f"{probing.describe(manifest.health)}: {result.summary}"
    return Check(ctx, service, "health", result.ok, report, "not healthy"), result
