"""Revert: undo a release, code first, then each service's data and containers.

Every step can run again: a revert killed halfway (kill -9) is finished by running
it once more. The revert commit is recorded in the state file as REVERT_SHA as
soon as it exists, so a rerun does not revert twice; a half-applied revert with
no commit yet is dropped and applied again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from release_phases import backup, hostchecks, prepare, probing, progress
from release_phases.context import ReleaseContext
from release_phases.errors import ReleaseError
from release_phases.host import QUERY_TIMEOUT, ComposeProject, git
from release_phases.host.compose import stack_name
from release_phases.host.engine import tag_argv
from release_phases.host.shell import render
from release_phases.host.swarm import SwarmStack
from release_phases.manifest import Manifest
from release_phases.state import image_key
from release_phases.steps import Step

NOTHING_REVERTED = "everything: nothing was reverted"


def preflight(ctx: ReleaseContext) -> list[str]:
    st = ctx.state
    version = hostchecks.docker_version(ctx, NOTHING_REVERTED)
    lines = [f"Docker Engine {version} reachable"]
    branch = ctx.git.branch()
    if branch != st.branch:
        raise ReleaseError(
            f"{ctx.repo} is on {branch or 'a detached HEAD'}, but ticket {ctx.ticket} was "
            f"released from {st.branch}",
            untouched=NOTHING_REVERTED,
            next_command=f"`git -C {ctx.repo} switch {st.branch}`, then {ctx.options.command()}",
        )
    dirty = ctx.git.dirty()
    before = ctx.found
    # An earlier revert run that got as far as the code but not its commit.
    half_done = (
        before is not None
        and before.phase == "revert"
        and before.phase_status != "done"
        and not before.extra.get("REVERT_SHA")
    )
    if dirty and half_done and not ctx.options.skip_git and ctx.git.staged_only():
        # Our own revert, interrupted before its commit: drop it and apply it again.
        ctx.git.abort_revert()
        lines.append("dropped a revert left half-applied by an interrupted run")
    else:
        hostchecks.refuse_dirty(ctx, dirty, NOTHING_REVERTED)
    lines.append(f"branch {branch}, BASE_SHA {st.base_sha}, MERGE_SHA {st.merge_sha}")
    # With --skip-git the compose file stays the release's: IMAGES is not used.
    recorded = {} if ctx.options.skip_git else st.images
    missing = [image for image in recorded.values() if ctx.host.engine.image_id(image) is None]
    if missing:
        raise ReleaseError(
            f"the images services ran before the release are no longer on this host: "
            f"{', '.join(f'{k}={i}' for k, i in recorded.items() if i in missing)} "
            "(removed or pruned?); the revert would not bring back what ran",
            untouched=NOTHING_REVERTED,
            next_command="bring them back (`docker load -i <saved image>`, or rebuild so that "
            f"`docker image inspect {missing[0]}` finds it), then {ctx.options.command()}; "
            "or, to revert to whatever image the reverted compose file names instead, "
            f"remove those entries from IMAGES in {ctx.paths.state}, then the same command",
        )
    if recorded:
        lines.append(f"images to bring back, all on this host: {len(recorded)}")
    return lines


def bring_back_images(
    ctx: ReleaseContext, manifest: Manifest, project: ComposeProject
) -> list[str]:
    """Point each image tag the reverted compose file names at the id the service ran
    before the release (IMAGES), where the tag has moved since; what was done, a line
    each. With --skip-git the compose file is the release's, and its tags stay. Only
    the manifest's own image.name:image.tag is moved, as prepare only recorded ids of
    containers that ran it."""
    service = manifest.service
    recorded = {
        name: ctx.state.images[key]
        for name in project.services
        if (key := image_key(service, project.services, name)) in ctx.state.images
    }
    if not recorded:
        return ["no image recorded in IMAGES (the service had no container before)"]
    if ctx.options.skip_git:
        return [
            "--skip-git: the compose file is the release's, its image tags are left as they are"
        ]
    services = ctx.host.compose_config(project).get("services") or {}
    lines = []
    for name, image in recorded.items():
        ref = (services.get(name) or {}).get("image")
        if ref != manifest.image.ref:
            lines.append(
                f"{name}: the compose file names {ref or 'no image'}, not the manifest's "
                f"{manifest.image.ref}; no tag is moved"
            )
            continue
        now = ctx.host.engine.image_id(ref)
        if now == image:
            lines.append(f"{name}: {ref} is {image}, as before the release")
            continue
        ctx.host.run(tag_argv(image, ref), timeout=QUERY_TIMEOUT)
        lines.append(f"{name}: {ref} pointed at {now or 'nothing'}; tagged {image} again")
    return lines


def trailer(ctx: ReleaseContext) -> str:
    """The line that marks a revert commit as this release's, whatever its sha becomes."""
    return f"Release-Phases-Revert: {ctx.ticket} {ctx.state.merge_sha}"


def revert_code(ctx: ReleaseContext) -> tuple[str, list[str]]:
    """A local commit undoing BASE_SHA..MERGE_SHA; returns it and the argvs run.

    An earlier run's revert commit is found by its trailer in MERGE_SHA..HEAD, so a
    rerun does not revert twice, even after `git pull --rebase` gave it a new sha.
    """
    st = ctx.state
    head = ctx.git.head()
    if not ctx.git.is_ancestor(st.merge_sha, head):
        raise ReleaseError(
            f"MERGE_SHA {st.merge_sha} is not in the history of HEAD {head}",
            untouched=NOTHING_REVERTED,
            next_command=f"check `git -C {ctx.repo} log`; for a hotfix without a merge use "
            + ctx.options.command("--skip-git"),
            step="git-revert",
        )
    done = ctx.git.find_commit(st.merge_sha, trailer(ctx))
    if done:
        return done, []
    chain = ctx.git.first_parent_chain(st.base_sha, st.merge_sha)
    if not chain:
        raise ReleaseError(
            f"BASE_SHA..MERGE_SHA holds no commit: {st.base_sha}..{st.merge_sha}",
            untouched=NOTHING_REVERTED,
            next_command=f"check {ctx.paths.state}; to restore data and containers only: "
            + ctx.options.command("--skip-git"),
            step="git-revert",
        )
    argvs = [git.revert_argv(ctx.repo, sha, merge=ctx.git.is_merge(sha)) for sha in chain]
    how = "merge commit" if len(chain) == 1 and ctx.git.is_merge(chain[0]) else "range"
    message = (
        f"Revert ticket {ctx.ticket}: undo {st.base_sha[:12]}..{st.merge_sha[:12]} ({how})\n\n"
        f"Released as MERGE_SHA {st.merge_sha} on top of BASE_SHA {st.base_sha}.\n\n"
        f"{trailer(ctx)}"
    )
    argvs.append(git.commit_argv(ctx.repo, message))
    for argv in argvs:
        result = ctx.git.apply(argv)
        if not result.ok:
            ctx.git.abort_revert()
            raise ReleaseError(
                f"`{render(argv)}` failed (a conflict with later commits?):\n{result.tail(15)}",
                untouched=f"the code: the half revert was dropped, HEAD is still {head}",
                next_command="revert by hand, then " + ctx.options.command("--skip-git"),
                rc=result.returncode,
                step="git-revert",
            )
    return ctx.git.head(), [render(a) for a in argvs]


def _service_manifest(ctx: ReleaseContext, service: str) -> Manifest | None:
    """The service as the reverted worktree has it; None when the release added it."""
    if not (ctx.repo / "packages" / service / "manifest.yaml").exists():
        return None
    return ctx.manifest(service)


def restore_service(ctx: ReleaseContext, service: str, step: Step) -> None:
    """Check the backup and what its restore needs; point image tags back at IMAGES' ids;
    set aside its dump's data; stop; set aside and restore its volumes; create its
    containers at the reverted code without starting them; restore its paths; start;
    wait healthy; feed the dump to its restore; wait healthy again.

    Everything the restore needs is checked while the service still runs. Nothing of
    it runs inside the service's image: a volume goes back by being removed and
    created again (the service's stopped containers are removed first, as Docker
    keeps a held volume), then filled (by tar on this host, or through the Docker
    API; `backup.restore`). The files go back
    before the service starts: the old code never sees the new data, and paths
    restored into a container's own filesystem survive (a recreate after the restore
    would discard them). A dump goes back through the service itself, so only once it
    runs and answers healthy.
    """
    manifest = _service_manifest(ctx, service)
    restoring = None
    if not ctx.options.skip_data and manifest is not None:
        restoring = _checked_backup(ctx, service, manifest)
        _while_running(
            ctx, service, step, "restore preflight (before anything stops)", restoring.preflight
        )
    if manifest is None and _remove_stack(ctx, service, step):
        return
    if manifest is None:
        # Added by the release: its compose file went with the revert.
        # Compose labels its containers with the directory of the compose file.
        containers = ctx.host.engine.containers_made_in(str(ctx.repo / "packages" / service))
        for c in containers:
            c.remove(force=True)
        step.detail(
            "removed",
            f"{service} did not exist before the release; removed its containers: "
            + (" ".join(str(c.name) for c in containers) or "(none)"),
        )
        return
    project = ctx.project(manifest)
    step.detail("images", "\n".join(bring_back_images(ctx, manifest, project)))
    if manifest.swarm:
        _restore_stack(ctx, manifest, project, restoring, step)
        return
    if restoring is not None:
        _while_running(
            ctx,
            service,
            step,
            "set aside before stopping (so the revert can be undone)",
            restoring.set_aside_dump,
        )
    with _abandoned_on_failure(restoring):
        _stop(ctx, service, project, step)
        shown = _restore_volumes(ctx, service, restoring, step) if restoring is not None else []
        _create(ctx, service, project, step, restored=restoring is not None)
        if restoring is not None:
            _restore_paths(ctx, service, restoring, step, shown)
        else:
            step.detail("data", "--skip-data: the backup was not restored")
    start = project.start()
    with _worded(
        "compose-start",
        untouched=f"{service}: created at the reverted code with its data restored, not started",
        then=ctx.options.command(),
    ):
        started = ctx.host.run(start, timeout=ctx.options.compose_timeout)
    step.detail("compose start", f"$ {render(start)}\n{started.output}")
    _wait_healthy(ctx, manifest, project, step, f"{service} is back at the old code")
    if restoring is not None and restoring.dumps:
        _restore_dump(ctx, service, restoring, step)
        _wait_healthy(ctx, manifest, project, step, f"{service}'s dump was restored")


def _remove_stack(ctx: ReleaseContext, service: str, step: Step) -> bool:
    """A swarm service the release added: `docker stack rm` of its stack (its volumes
    stay, as compose's do). False when no such stack runs."""
    stack = SwarmStack(stack_name(service), Path(), ())
    if not ctx.host.swarm.is_manager() or not ctx.host.swarm.stack_services(stack.name):
        return False
    argv = stack.remove()
    with _worded("stack-rm", untouched=f"{service}: its stack may be partly removed"):
        removed = ctx.host.run(argv, timeout=ctx.options.compose_timeout)
    step.detail(
        "removed",
        f"{service} did not exist before the release; removed its stack\n"
        f"$ {render(argv)}\n{removed.output}",
    )
    return True


def _restore_stack(
    ctx: ReleaseContext,
    manifest: Manifest,
    project: ComposeProject,
    restoring: backup.Restore | None,
    step: Step,
) -> None:
    """A swarm service: its tasks scaled to 0 (Swarm keeps the service and its spec),
    its volumes restored, then the reverted compose file deployed again, which brings
    back its replicas at the recorded image, and the wait for convergence and health.

    Not `docker service rollback`: that goes back one update only (a release may have
    made several), and knows nothing of the data."""
    service = manifest.service
    stack = ctx.stack(project)
    if restoring is not None:
        prepare.refuse_remote_volumes(
            ctx,
            manifest,
            project,
            untouched=f"{service}: still running, nothing was stopped or restored",
        )
    scale = stack.scale(0)
    ctx.host.say(f"{service}: scaling its stack {stack.name} to 0 tasks")
    with _worded(
        "stack-stop",
        untouched=f"{service}: its data; its tasks may be partly stopped",
        then=ctx.options.command(),
    ):
        scaled = ctx.host.run(scale, timeout=ctx.options.compose_timeout)
        waited = _wait_stopped(ctx, stack)
    step.detail("service scale", f"$ {render(scale)}\n{scaled.output}{waited}")
    with _abandoned_on_failure(restoring):
        if restoring is not None:
            _restore_volumes(ctx, service, restoring, step)
            step.detail("undo", restoring.undo)
        else:
            step.detail("data", "--skip-data: the backup was not restored")
    deploy = stack.deploy()
    with _worded(
        "stack-deploy",
        untouched=f"{service}: scaled to 0 tasks"
        + (", its volumes restored" if restoring is not None else ""),
        then=ctx.options.command(),
    ):
        deployed = ctx.host.run(deploy, timeout=ctx.options.compose_timeout, stream=True)
    step.detail("stack deploy", f"$ {render(deploy)}\n{deployed.output}")
    _wait_healthy(ctx, manifest, project, step, f"{service} is back at the old code")


def _wait_stopped(ctx: ReleaseContext, stack: SwarmStack) -> str:
    """Wait until no container of the stack's tasks runs on this node; what was waited."""
    began = time.monotonic()
    deadline = began + ctx.options.compose_timeout
    while True:
        running = [
            str(c.name)
            for name in stack.service_names
            for c in ctx.host.swarm.containers(stack.name, name)
            if c.status not in ("created", "exited", "dead")
        ]
        if not running:
            return f"\nno task of {stack.name} runs any more ({time.monotonic() - began:.1f}s)"
        if time.monotonic() > deadline:
            raise ReleaseError(
                f"the tasks of {stack.name} still run after scaling it to 0: {', '.join(running)}",
                untouched="its data: nothing was restored",
                next_command=f"see `{render(['docker', 'stack', 'ps', stack.name])}`",
            )
        time.sleep(0.2)


def _checked_backup(ctx: ReleaseContext, service: str, manifest: Manifest) -> backup.Restore:
    """The service's backup, verified before anything stops: a damaged backup must not
    leave the service down."""
    stamp = ctx.state.backups.get(service)
    if stamp is None:
        why = ""
        if manifest.backup.when_stopped:
            why = (
                ": it is taken in migrate (backup.when: stopped), and the release stopped"
                " before taking it"
            )
        raise ReleaseError(
            f"{service} has no backup in BACKUPS of {ctx.paths.state}{why}",
            untouched=f"{service}: its containers and data, nothing was stopped",
            next_command=ctx.options.command("--skip-data")
            + "   (only if its data was not touched)",
            step="restore",
        )
    try:
        return backup.Restore(
            ctx.host,
            manifest,
            ctx.project(manifest),
            ctx.paths.backups,
            stamp,
            timeout=ctx.options.compose_timeout,
        )
    except ReleaseError as exc:
        exc.untouched = f"{service}: still running, nothing was stopped or restored"
        exc.next_command = (
            f"check it ({exc.next_command}); then either put a good copy of the archive "
            f"back and run {ctx.options.command()}, or, only if {service}'s data was not "
            f"touched by the release, {ctx.options.command('--skip-data')}"
        )
        exc.step = "restore"
        raise


@contextmanager
def _worded(step: str, *, untouched: str = "", before: str = "", then: str = "") -> Iterator[None]:
    """A ReleaseError from the block, worded as this revert step's: ``untouched``
    replaces what it says was left alone, ``before`` leads it, ``then`` follows its
    next command."""
    try:
        yield
    except ReleaseError as exc:
        exc.step = step
        exc.untouched = "; ".join(p for p in (before, untouched or exc.untouched) if p)
        if then:
            exc.next_command = f"{exc.next_command}; then {then}" if exc.next_command else then
        raise


@contextmanager
def _abandoned_on_failure(restoring: backup.Restore | None) -> Iterator[None]:
    """A restore the block does not finish is abandoned (see `Restore.abandon`)."""
    try:
        yield
    except BaseException:
        if restoring is not None:
            restoring.abandon()
        raise


def _while_running(
    ctx: ReleaseContext, service: str, step: Step, title: str, work: Callable[[], list[str]]
) -> None:
    """A part of the restore done while the service still runs (its preflight, the
    set-aside of its dump); a failure says nothing was stopped or restored."""
    untouched = f"{service}: still running, nothing was stopped or restored"
    with _worded("restore", untouched=untouched, then=ctx.options.command()):
        lines = work()
    if lines:
        step.detail(title, "\n".join(lines))


def _stop(ctx: ReleaseContext, service: str, project: ComposeProject, step: Step) -> None:
    stop = project.stop()
    ctx.host.say(f"{service}: stopping its containers, {project.stop_wait()}")
    with _worded(
        "compose-stop",
        untouched=f"{service}: its data; its containers may be partly stopped",
        then=ctx.options.command(),
    ):
        stopped = ctx.host.run(stop, timeout=ctx.options.compose_timeout)
    step.detail("compose stop", f"$ {render(stop)}\n{stopped.output}")


def _create(
    ctx: ReleaseContext, service: str, project: ComposeProject, step: Step, *, restored: bool
) -> None:
    """Create the service's containers at the reverted code, not started."""
    create = project.up(start=False)
    data = (
        "its volumes restored, its paths not yet (nothing was lost)"
        if restored
        else "its data as it was"
    )
    with _worded(
        "compose-create",
        untouched=f"{service}: stopped, {data}",
        then=ctx.options.command(),
    ):
        created = ctx.host.run(create, timeout=ctx.options.compose_timeout, stream=True)
    step.detail("compose up --no-start", f"$ {render(create)}\n{created.output}")


def _restore_volumes(
    ctx: ReleaseContext, service: str, restoring: backup.Restore, step: Step
) -> list[str]:
    """Set aside what stands, then restore the volumes; what was done, shown at once so
    that a failure later in the step still reports it."""
    with _worded("restore", before=f"{service} is stopped", then=ctx.options.command()):
        lines = restoring.volumes()
    # How long each part took, in the log (bench/backup.py reads them).
    step.log_fields.update({f"{k}_seconds": f"{v:.2f}" for k, v in restoring.seconds.items()})
    if lines:
        step.detail("restore volumes", "\n".join(lines))
    _tell(service, lines)
    return lines


def _tell(service: str, lines: list[str]) -> None:
    """What the restore did, on the terminal too: the data came back, or was set aside."""
    for line in lines:
        progress.say(service, line)


def _restore_paths(
    ctx: ReleaseContext, service: str, restoring: backup.Restore, step: Step, shown: list[str]
) -> None:
    created = f"{service} is created at the reverted code, not started"
    with _worded("restore", before=created, then=ctx.options.command()):
        report = restoring.paths()
    undo = f"undo: stamp {report.undo_stamp} ({restoring.undo})"
    step.detail("restore", "\n".join([*report.actions[len(shown) :], undo]))
    _tell(service, [*report.actions[len(shown) :], undo])


def _restore_dump(ctx: ReleaseContext, service: str, restoring: backup.Restore, step: Step) -> None:
    files = any(e.kind != "dump" for e in restoring.record.entries)
    where = f"{service} runs the reverted code" + (
        " with its volumes and paths restored" if files else ""
    )
    rerun = (
        f"rerun the revert, which restores {service} again from {restoring.record.stamp}:"
        f" {ctx.options.command()}"
    )
    with _worded("restore-dump", before=f"{where}; its dump was not restored", then=rerun):
        lines = restoring.dump()
    step.detail("restore dump", "\n".join(lines))
    _tell(service, lines)


def _wait_healthy(
    ctx: ReleaseContext, manifest: Manifest, project: ComposeProject, step: Step, what: str
) -> None:
    probed = probing.wait_until_healthy(ctx, manifest, project, step)
    if not probed.ok:
        raise ReleaseError(
            f"{what} but not healthy: {probed.summary}",
            untouched="the services after it in the revert order",
            next_command="read the container logs in the report, fix, then "
            + ctx.options.command(),
            step="health",
        )


def push(ctx: ReleaseContext) -> str:
    result = ctx.git.push(ctx.state.branch)
    if not result.ok:
        raise ReleaseError(
            f"`{render(result.argv)}` was refused (origin/{ctx.state.branch} moved?):\n"
            f"{result.tail(15)}",
            untouched=f"the local revert commit {ctx.git.head()} is kept; containers and data "
            "are already reverted",
            next_command=f"`git -C {ctx.repo} pull --rebase origin {ctx.state.branch}`, "
            f"then {ctx.options.command()}",
            rc=result.returncode,
            step="push",
        )
    return result.output
