"""Revert: undo a release, code first, then each service's data and containers.

Every step can run again: a revert killed halfway (kill -9) is finished by running
it once more. The revert commit is recorded in the state file as REVERT_SHA as
soon as it exists, so a rerun does not revert twice; a half-applied revert with
no commit yet is dropped and applied again.
"""

from __future__ import annotations

from release_phases import backup, hostchecks, probing
from release_phases.context import ReleaseContext
from release_phases.errors import ReleaseError
from release_phases.host import git
from release_phases.host.shell import render
from release_phases.manifest import Manifest
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
    """Stop, recreate at the reverted code without starting, restore, start, wait healthy.

    The data goes back into containers that are created but not yet started: the
    old code never sees the new data, and paths restored into a container's own
    filesystem survive (a recreate after the restore would discard them).
    """
    manifest = _service_manifest(ctx, service)
    stamp = ctx.state.backups.get(service)
    restoring = not ctx.options.skip_data and manifest is not None
    if restoring:
        if stamp is None:
            raise ReleaseError(
                f"{service} has no backup in BACKUPS of {ctx.paths.state}",
                untouched=f"{service}: its containers and data, nothing was stopped",
                next_command=ctx.options.command("--skip-data")
                + "   (only if its data was not touched)",
                step="restore",
            )
        # Before anything stops: a damaged backup must not leave the service down.
        try:
            backup.verify(ctx.paths.backups, service, stamp)
        except ReleaseError as exc:
            exc.untouched = f"{service}: still running, nothing was stopped or restored"
            exc.next_command = (
                f"check it ({exc.next_command}); then either put a good copy of the archive "
                f"back and run {ctx.options.command()}, or, only if {service}'s data was not "
                f"touched by the release, {ctx.options.command('--skip-data')}"
            )
            exc.step = "restore"
            raise
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
    timeout = ctx.options.compose_timeout
    stop = project.stop()
    stopped = ctx.host.run(stop, timeout=timeout)
    step.detail("compose stop", f"$ {render(stop)}\n{stopped.output}")
    create = project.up(start=False)
    created = ctx.host.run(create, timeout=timeout, stream=True)
    step.detail("compose up --no-start", f"$ {render(create)}\n{created.output}")
    if restoring:
        assert stamp is not None  # checked above, before anything stopped
        try:
            report = backup.restore(ctx.host, manifest, project, ctx.paths.backups, stamp)
        except ReleaseError as exc:
            exc.untouched = f"{service} is stopped at the reverted code; {exc.untouched}"
            exc.step = "restore"
            raise
        step.detail("restore", "\n".join(report.actions) + f"\nundo: stamp {report.undo_stamp}")
    else:
        step.detail("data", "--skip-data: the backup was not restored")
    start = project.start()
    started = ctx.host.run(start, timeout=timeout)
    step.detail("compose start", f"$ {render(start)}\n{started.output}")
    probed = probing.wait_until_healthy(ctx, manifest, project, step)
    if not probed.ok:
        raise ReleaseError(
            f"{service} is back at the old code but not healthy: {probed.summary}",
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
