"""Phase 2, migrate: one service at a time, hooks around a forced recreate.

For a service: `pre_start_init`, (with `backup.when: stopped`: `docker compose stop`
and its backup), `docker compose up -d --no-deps --force-recreate`, poll the health
endpoint, then `post_start_init` and `ensure-config`. The first thing that fails
stops the service there; the plugin halts every later step.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from release_phases import backup, health, hostchecks, probing, scripts
from release_phases.context import ReleaseContext
from release_phases.errors import ReleaseError
from release_phases.host import compose
from release_phases.host.compose import ComposeProject
from release_phases.host.shell import CommandFailed, render
from release_phases.manifest import Manifest
from release_phases.steps import Step

PRE_HOOKS = ("pre_start_init",)
POST_HOOKS = ("post_start_init", "ensure-config")
#: Compose processes reading the services' configs at once in the readiness step.
CONFIG_READERS = 8


def hooks_of(manifest: Manifest) -> list[scripts.Script]:
    found = (scripts.find_hook(manifest.package_dir, name) for name in scripts.HOOKS)
    return [hook for hook in found if hook is not None]


def absent_images(
    ctx: ReleaseContext, project: ComposeProject, config: dict[str, Any]
) -> tuple[list[str], str]:
    """Images the service needs that are not on this host, after trying to pull them.

    Returns them with the pull's output (empty when no pull was tried). Pulling is
    skipped with the ini option `release_pull = false` (hosts without a registry).
    ``config`` is the project's `compose_config`.
    """
    absent = ctx.host.missing_images(project, config)
    if not absent or not ctx.options.pull:
        return absent, ""
    argv = project.pull()
    result = ctx.host.run(argv, check=False, timeout=ctx.options.compose_timeout)
    return ctx.host.missing_images(project, config), f"$ {render(argv)}\n{result.output}"


def to_build(
    ctx: ReleaseContext, manifest: Manifest, project: ComposeProject, config: dict[str, Any]
) -> list[str]:
    """The service's compose services that compose builds (a `build:` section); each
    must be tagged as the manifest's image.name:image.tag, which verify checks.
    ``config`` is the project's `compose_config`."""
    built = compose.built_in_config(config, project.services)
    expected = manifest.image.ref
    for name, image in built:
        if image != expected:
            raise ReleaseError(
                f"{manifest.service}: compose service {name} builds an image tagged "
                f"{image or '(no image: set)'}, not the manifest's {expected}",
                untouched="every container: nothing was built or recreated",
                next_command=f"set `image: {expected}` on service {name} in "
                f"{manifest.compose_file}, commit and merge it, then "
                + ctx.options.command("--from=migrate"),
                step="build",
            )
    return [name for name, _ in built]


def build(
    ctx: ReleaseContext, manifest: Manifest, project: ComposeProject, names: list[str]
) -> str:
    """`compose build` of those services, from the worktree at MERGE_SHA; its output."""
    argv = project.build(names)
    result = ctx.host.run(argv, timeout=ctx.options.compose_timeout, stream=True, check=False)
    if not result.ok:
        how = "timed out" if result.timed_out else f"exited {result.returncode}"
        raise ReleaseError(
            f"the build of {manifest.service} {how}; its last output:\n{result.tail(30)}",
            untouched="every container: nothing was recreated",
            next_command=f"fix the build (run it by hand: cd {ctx.repo} && {render(argv)}), "
            f"then {ctx.options.command('--from=migrate')}",
            rc=result.returncode if result.returncode > 0 else 1,
            step="build",
        )
    return f"$ {render(argv)}\n{result.output}"


def ready(ctx: ReleaseContext, services: list[str], step: Step) -> list[str]:
    """Before any container is touched: Compose v2, builds, every image, every script
    runtime. Everything that can be checked is checked before the first build."""
    lines = [f"compose: {ctx.host.compose}"]
    planned = []
    needed: list[scripts.Script] = []
    manifests = [ctx.manifest(service) for service in services]
    projects = [ctx.project(manifest) for manifest in manifests]
    # Read once (a build or a pull changes no compose file), and all at once: each is a
    # Compose process that mostly waits to start, about 70 ms a service one by one.
    with ThreadPoolExecutor(max_workers=CONFIG_READERS) as pool:
        configs = list(pool.map(ctx.host.compose_config, projects))
    for manifest, project, config in zip(manifests, projects, configs, strict=True):
        planned.append((manifest, project, config, to_build(ctx, manifest, project, config)))
        needed += hooks_of(manifest)
    needed += scripts.find_ticket_scripts(ctx.repo, ctx.ticket)
    scripts.preflight(needed)
    missing: list[str] = []
    for manifest, project, config, names in planned:
        if names:
            step.detail(f"build of {manifest.service}", build(ctx, manifest, project, names))
            lines.append(f"{manifest.service}: built {manifest.image.ref}")
        absent, pulled = absent_images(ctx, project, config)
        missing += [f"{image} (for {manifest.service})" for image in absent]
        if pulled:
            lines.append(pulled)
        lines.append(
            f"{manifest.service}: compose file {manifest.compose_file.name}, "
            f"containers {' '.join(manifest.containers)}"
        )
    if missing:
        raise ReleaseError(
            "images are not present on this host"
            + (" and could not be pulled" if ctx.options.pull else "")
            + ": "
            + ", ".join(missing),
            untouched="every container: nothing was recreated",
            next_command="build, `docker load` or push those images, then "
            + ctx.options.command("--from=migrate"),
            step="images",
        )
    lines.append(f"scripts: {' '.join(s.name for s in needed) or '(none)'}")
    return lines


def _run_hooks(
    ctx: ReleaseContext, manifest: Manifest, names: tuple[str, ...], step: Step, *, untouched: str
) -> None:
    """Run the service's hooks of ``names``; a failed one says ``untouched``."""
    for name in names:
        hook = scripts.find_hook(manifest.package_dir, name)
        if hook is None:
            continue
        try:
            result = scripts.run_script(
                hook,
                host=ctx.host,
                env=ctx.script_env(manifest.service),
                cwd=ctx.repo,
                timeout=ctx.options.script_timeout,
            )
        except scripts.ScriptFailed as exc:
            step.detail(f"{hook.name} (failed)", exc.result.output)
            exc.step = name
            exc.untouched = untouched
            raise
        step.detail(hook.name, result.output or "(no output)")


def backup_stopped(
    ctx: ReleaseContext, service: str, project: ComposeProject, step: Step
) -> None:
    """`backup.when: stopped`: stop the old containers and archive, before `up`.

    Whether, and what, is what the running version declared (`declared_before`), as
    for prepare's backup, with the same code and the same record. A backup an earlier
    run of this release took (resumed with --from=migrate) is kept: the containers
    may run the new version by now, whose data is not what a revert should restore.
    If the backup fails, the old containers are started again before the step fails.
    """
    declared, before = ctx.declared_before(service)
    if not declared.backup.when_stopped:
        return
    kept = ctx.state.backups.get(service)
    if kept is not None:
        step.detail("backup", f"{service}: taken by an earlier run of this release ({kept}), kept")
        step.log_fields.update(stamp=kept)
        return
    timeout = ctx.options.compose_timeout
    stop = project.stop()
    ctx.host.say(f"{service}: stopping its containers for the backup, {project.stop_wait()}")
    try:
        stopped = ctx.host.run(stop, timeout=timeout)
        step.detail("compose stop (for the backup)", f"$ {render(stop)}\n{stopped.output}")
        began = time.monotonic()
        record = backup.take(
            ctx.host,
            declared,
            before,
            ctx.paths.backups,
            dump_timeout=timeout,
            note="taken in migrate, with the old containers stopped",
        )
    except Exception as exc:
        restarted = _start_again(ctx, project, step)
        if isinstance(exc, ReleaseError):
            steps = [exc.next_command, f"then {ctx.options.command('--from=migrate')}"]
            if restarted:
                exc.untouched = (
                    f"{service}: its old containers were started again, nothing was"
                    " recreated; no backup of it was kept; the services after it were"
                    " not touched"
                )
            else:
                exc.untouched = (
                    f"{service} is STOPPED (starting its old containers again failed too,"
                    " see the report); nothing was recreated; no backup of it was kept;"
                    " the services after it were not touched"
                )
                steps.insert(0, f"start them: {render(project.start())}")
            exc.next_command = "; ".join(s for s in steps if s)
            exc.step = "backup"
        raise
    # The backup's own time: what `when: stopped` adds to the downtime of a recreate.
    seconds = time.monotonic() - began
    ctx.journal.note_backup(service, record.stamp)
    step.backups[service] = record.stamp
    step.log_fields.update(stamp=record.stamp, backup_seconds=f"{seconds:.1f}")
    step.detail(
        "backup (taken stopped)",
        f"{record.describe()}\n{seconds:.1f}s with {service} stopped for it"
        " (the downtime this backup adds)",
    )


def _start_again(ctx: ReleaseContext, project: ComposeProject, step: Step) -> bool:
    """Start the old containers after a failed backup; whether that worked."""
    start = project.start()
    result = ctx.host.run(start, timeout=ctx.options.compose_timeout, check=False)
    step.detail("compose start (the old containers again)", f"$ {render(start)}\n{result.output}")
    return result.ok


def engine_gone(ctx: ReleaseContext) -> str:
    """Why the Docker Engine does not answer now, or "" when it does: a failed compose
    command may have failed for that alone."""
    try:
        ctx.host.engine.version()
    except ReleaseError as exc:
        return f"{exc.what} (looked for at {hostchecks.docker_host()})"
    return ""


def recreate(ctx: ReleaseContext, manifest: Manifest, project: ComposeProject, step: Step) -> None:
    """A compose service: (its backup, when taken stopped), then `compose up` of new
    containers in place of the old ones."""
    service = manifest.service
    resume = ctx.options.command("--from=migrate")
    backup_stopped(ctx, service, project, step)
    argv = project.up()
    ctx.host.say(
        f"{service}: recreating its containers; running ones are stopped first, "
        + project.stop_wait()
    )
    try:
        result = ctx.host.recreate(project, timeout=ctx.options.compose_timeout)
    except ReleaseError as exc:
        output = exc.result.output if isinstance(exc, CommandFailed) else str(exc)
        step.detail("compose up (failed)", f"$ {render(argv)}\n{output}")
        gone = engine_gone(ctx)
        if gone:
            # Compose's own words ("Cannot connect ...") may be one line among many.
            raise ReleaseError(
                f"the Docker Engine stopped answering during `compose up` of {service}:"
                f" {gone}\n{exc.what}",
                untouched=f"the services after {service}: not touched; whether {service}'s "
                f"containers were recreated is unknown until the engine answers again "
                f"(then: {render(project.argv('ps', '--all'))})",
                next_command=f"check the engine (`docker info`), then {resume}",
                rc=exc.rc,
                step="compose-up",
            ) from None
        exc.untouched = (
            f"the services after {service}: not touched; {service}'s containers may be "
            "partly recreated (see `compose up` in the report)"
        )
        probing.keep_logs(ctx, project, step)
        exc.step = "compose-up"
        raise
    step.detail("compose up", f"$ {render(argv)}\n{result.output}")


def deploy_stack(
    ctx: ReleaseContext, manifest: Manifest, project: ComposeProject, step: Step
) -> None:
    """A swarm service: `docker stack deploy` of its compose file, which asks Swarm to
    update each service its way (`deploy.update_config`: start-first replaces a task
    only once its successor runs, healthy when it has a HEALTHCHECK). The wait for
    convergence follows, with the health checks."""
    service = manifest.service
    resume = ctx.options.command("--from=migrate")
    stack = ctx.stack(project)
    if not ctx.host.swarm.is_manager():
        raise ReleaseError(
            f"{service} runs as a swarm stack (engine: swarm), and this Docker Engine is not"
            " a swarm manager",
            untouched=f"{service}: nothing was deployed; the services after it: not touched",
            next_command="run the release on a manager node (`docker node ls` lists them), "
            f"or `docker swarm init` on this one; then {resume}",
            step="stack-deploy",
        )
    argv = stack.deploy()
    ctx.host.say(f"{service}: deploying stack {stack.name}; Swarm updates its tasks")
    result = ctx.host.run(argv, timeout=ctx.options.compose_timeout, stream=True, check=False)
    step.detail("stack deploy", f"$ {render(argv)}\n{result.output}")
    if not result.ok:
        probing.keep_logs(ctx, project, step, swarm=True)
        how = "timed out" if result.timed_out else f"exited {result.returncode}"
        raise ReleaseError(
            f"`docker stack deploy` of {service} {how}: {result.tail(15)}",
            untouched=f"the services after {service}: not touched; the stack's services may "
            "be partly updated (see the tasks in the report)",
            next_command=f"fix the cause, then {resume}   or roll back: "
            + ctx.options.command(mode="revert"),
            rc=result.returncode if result.returncode > 0 else 1,
            step="stack-deploy",
        )


def migrate_service(ctx: ReleaseContext, service: str, step: Step) -> health.HealthResult:
    manifest = ctx.manifest(service)
    project = ctx.project(manifest)
    resume = ctx.options.command("--from=migrate")
    # Its images were built, pulled or found by the readiness step, which every
    # migrate runs first (the phase is only ever selected whole).
    _run_hooks(
        ctx,
        manifest,
        PRE_HOOKS,
        step,
        untouched=f"{service}: not recreated, its old containers still run; the services "
        "after it: not touched",
    )
    if manifest.swarm:
        deploy_stack(ctx, manifest, project, step)
    else:
        recreate(ctx, manifest, project, step)
    try:
        probed = probing.wait_until_healthy(ctx, manifest, project, step)
    except ReleaseError as exc:  # the engine stopped answering the wait's questions
        exc.untouched = (
            f"the services after {service}: not touched; {service} was recreated, its "
            "health is not known"
        )
        exc.step = "health"
        raise
    if not probed.ok:
        what = "did not converge and become healthy" if manifest.swarm else "did not become healthy"
        tasks = f"\n{probing.swarm_tasks(ctx, project)}" if manifest.swarm else ""
        raise ReleaseError(
            f"{service} {what} ({probing.describe(manifest.health)}): {probed.summary}{tasks}",
            untouched="the services after it: they were not touched; "
            + (
                f"Swarm left {service}'s tasks as the report shows"
                if manifest.swarm
                else f"{service} runs the new containers, unhealthy"
            ),
            next_command=f"read the container logs in the report, fix, then {resume}"
            f"   or roll back: {ctx.options.command(mode='revert')}",
            step="health",
        )
    try:
        _run_hooks(
            ctx,
            manifest,
            POST_HOOKS,
            step,
            untouched=f"{service} runs its new containers, healthy; the services after it: "
            "not touched",
        )
    except ReleaseError:
        probing.keep_logs(ctx, project, step, swarm=manifest.swarm)
        raise
    step.log_fields.update(health=probed.summary)
    return probed
