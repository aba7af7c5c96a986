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
    project = ctx.project(ctx.manifest(service))
    return [
        RunningImage(str(c.name), c.attrs["Config"]["Image"], c.attrs["Image"], c.status)
        for c in ctx.host.engine.containers_of_all(project.name, project.services)
    ]


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
        return Check(ctx, service, "image", False, report, "it has no container")
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
