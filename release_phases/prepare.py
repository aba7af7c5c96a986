"""Phase 1, prepare: preflight, pull, which services changed.

Each function checks before it changes anything and raises a `ReleaseError`
that says what was left untouched and what to run next.
"""

from __future__ import annotations

from dataclasses import dataclass

from release_phases import backup, hostchecks
from release_phases.context import ReleaseContext
from release_phases.errors import ReleaseError
from release_phases.host import ComposeProject
from release_phases.host.swarm import remote_tasks
from release_phases.manifest import Manifest
from release_phases.plan import services_between
from release_phases.scripts import find_ticket_scripts
from release_phases.state import image_key
from release_phases.verify import task_images

NOTHING_CHANGED = "everything: nothing was pulled, backed up or restarted"


def preflight(ctx: ReleaseContext) -> list[str]:
    """Check the host before anything changes; returns what was checked."""
    opts = ctx.options
    if ctx.plan.problem:
        raise ctx.plan.problem
    version = hostchecks.docker_version(ctx, NOTHING_CHANGED)
    # Found before the pull: backups name it in their messages, migrate drives it.
    found = ctx.host.compose
    hostchecks.refuse_dirty(ctx, ctx.git.dirty(), NOTHING_CHANGED)
    current = ctx.git.branch()
    if current != opts.branch:
        allowed = opts.branch != "main" and opts.force_allow_non_main
        if not allowed:
            raise ReleaseError(
                f"{ctx.repo} is on {current or 'a detached HEAD'}, not {opts.branch}",
                untouched=NOTHING_CHANGED,
                next_command="pytest -m return_to_main   (if a hotfix is checked out), or "
                f"`git -C {ctx.repo} switch {opts.branch}`, then {opts.command()}",
            )
    return [
        f"Docker Engine {version} reachable",
        f"compose: {found}",
        "worktree clean",
        f"branch {current} (release of {opts.branch})",
        f"origin reachable, origin/{opts.branch} at {ctx.plan.incoming_sha}",
    ]


@dataclass(frozen=True)
class Pulled:
    base_sha: str
    merge_sha: str
    output: str


def pull(ctx: ReleaseContext) -> Pulled:
    """BASE_SHA, fetch, `pull --ff-only`, MERGE_SHA; refuses a release of nothing."""
    opts = ctx.options
    head = ctx.git.head()
    base = ctx.plan.base_sha
    if opts.base_sha and not ctx.git.is_ancestor(base, head):
        raise ReleaseError(
            f"--base-sha {opts.base_sha} is not an ancestor of HEAD {head}",
            untouched=NOTHING_CHANGED,
            next_command="find the HEAD from before the pull with `git reflog`, then "
            + opts.command("--base-sha <that sha>"),
        )
    if head != ctx.plan.head_sha:
        # Another release pulled between this run's plan and its lock: what this run
        # planned to release is no longer what a pull would bring.
        raise ReleaseError(
            f"HEAD moved from {ctx.plan.head_sha} to {head} while this run was being planned "
            "(another release ran meanwhile?)",
            untouched=NOTHING_CHANGED,
            next_command="see what that release did (.asd/workspace/releases/*.log), then "
            + opts.command(),
        )
    untouched = NOTHING_CHANGED + f"; HEAD is still {head}"
    previous = ctx.git.branch()
    if previous != opts.branch:
        # A hotfix: a local branch of that name at HEAD, so the pull fast-forwards it.
        ctx.git.switch(opts.branch)
        untouched += (
            f"; prod was switched from {previous} to a local {opts.branch} at that commit "
            f"(`git -C {ctx.repo} switch {previous}` goes back)"
        )
    try:
        ctx.git.fetch()
    except ReleaseError as exc:
        raise ReleaseError(
            f"`git fetch origin` failed: {exc.what}",
            untouched=untouched,
            next_command=f"check the network and `git -C {ctx.repo} remote -v`, then "
            + opts.command(),
            rc=exc.rc,
        ) from None
    # Saved first: killed during the pull, the run leaves HEAD moved; the next run
    # finds what the release is from and goes on (plan.interrupted_after_pull). The
    # base, not HEAD: on a resumed or --base-sha run HEAD is already past it.
    ctx.journal.note("PULL_FROM", base)
    result = ctx.git.pull(opts.branch)
    if not result.ok:
        raise ReleaseError(
            f"`git pull --ff-only origin {opts.branch}` was refused (rc {result.returncode}): "
            f"the local branch and origin/{opts.branch} have diverged or the pull failed:\n"
            f"{result.tail(15)}",
            untouched=untouched,
            next_command=f"inspect with `git -C {ctx.repo} log --oneline --graph HEAD "
            f"origin/{opts.branch}`; prod must only ever fast-forward",
            rc=result.returncode,
        )
    merge = ctx.git.head()
    if base == merge:
        raise ReleaseError(
            f"nothing to release: BASE_SHA equals MERGE_SHA ({merge}). HEAD was already at "
            f"origin/{opts.branch} before the release started. This usually means the "
            "worktree was pulled by hand before the release: the engine must do the pull "
            "itself, or it cannot tell which services changed.",
            untouched=NOTHING_CHANGED,
            next_command="find the HEAD from before the manual pull with "
            f"`git -C {ctx.repo} reflog` and rerun with it, no reset needed: "
            + opts.command("--base-sha <sha>"),
        )
    return Pulled(base, merge, result.output)


def discover(ctx: ReleaseContext, base: str, merge: str) -> tuple[list[str], list[str]]:
    """SERVICES and ticket scripts of BASE...MERGE, checked against the collected plan."""
    services = list(services_between(ctx.git, ctx.repo, base, merge)[0])
    scripts = [s.name for s in find_ticket_scripts(ctx.repo, ctx.ticket)]
    if not services and not scripts:
        raise ReleaseError(
            f"nothing to release: no packages/<service>/ with a manifest changed in "
            f"{base[:12]}...{merge[:12]}, and there is no releases/{ctx.ticket}-* script",
            untouched=f"containers and data; the code was pulled to {merge}",
            next_command="check the ticket id and the merge; nothing else needs doing",
        )
    if tuple(services) != ctx.plan.services:
        raise ReleaseError(
            f"origin/{ctx.options.branch} moved while the release was being planned: the plan "
            f"had services [{' '.join(ctx.plan.services)}], the pull brought "
            f"[{' '.join(services)}]",
            untouched=f"containers and data; the code was pulled to {merge}",
            next_command=ctx.options.command(f"--base-sha {base}"),
        )
    # The compose files as merged may name env_files the planned (older) ones did not.
    ctx.learn_secrets(services)
    return services, scripts


def backup_service(
    ctx: ReleaseContext, declared: Manifest, project: ComposeProject
) -> backup.BackupRecord | None:
    """Back up what the service declared before this release (`ctx.declared_before`).

    None when that declaration says ``backup.when: stopped``: migrate takes the
    backup, between stopping the old containers and starting the new ones.
    """
    if declared.backup.when_stopped:
        return None
    if declared.swarm:
        refuse_remote_volumes(ctx, declared, project, untouched="everything: no backup was written")
    try:
        return backup.take(
            ctx.host,
            declared,
            project,
            ctx.paths.backups,
            dump_timeout=ctx.options.compose_timeout,
        )
    except ReleaseError as exc:
        # The pull is done (the ledger's next command carries --base-sha for it).
        exc.untouched = f"{exc.untouched}; the code alone was pulled, to {ctx.state.merge_sha[:12]}"
        raise


def refuse_unless_manager(ctx: ReleaseContext, service: str) -> None:
    """A swarm service is released through a swarm manager, or not at all."""
    if not ctx.host.swarm.is_manager():
        raise ReleaseError(
            f"{service} runs as a swarm stack (engine: swarm), and this Docker Engine is not "
            "a swarm manager",
            untouched="containers and data; the code alone was pulled",
            next_command="run the release on a manager node (`docker node ls` lists them), "
            "or make this one a manager (`docker swarm init`), then the same command",
        )


def refuse_remote_volumes(
    ctx: ReleaseContext, declared: Manifest, project: ComposeProject, *, untouched: str
) -> None:
    """A swarm service's volumes are backed up (and restored) where the engine runs: a
    task on another node keeps its volume there, out of reach. Refused, naming the
    node, until backups per node are supported (docs/swarm-multinode.md)."""
    if not declared.backup.volumes:
        return
    swarm = ctx.host.swarm
    stack = ctx.stack(project)
    remote = [
        (name, task)
        for name in stack.service_names
        for task in remote_tasks(swarm.tasks(name), swarm.node_id)
    ]
    if remote:
        where = ", ".join(f"{name} {task.label} on node {task.node[:12]}" for name, task in remote)
        raise ReleaseError(
            f"backup of {declared.service}: its volumes "
            f"({', '.join(declared.backup.volumes)}) live on the nodes its tasks run on, and "
            f"some run on another node than this manager ({where}); a backup of a volume on "
            "another node is not supported yet",
            untouched=untouched,
            next_command="pin the service to this node (deploy.placement.constraints: "
            f"[node.id == {swarm.node_id[:12] or '<this node>'}]) and redeploy it, or remove "
            f"its volumes from backup.volumes in {declared.source}; then the same command",
        )


def running_images(ctx: ReleaseContext, services: list[str]) -> tuple[dict[str, str], list[str]]:
    """The image id each service runs before the release: what the revert brings back;
    and a note for each container whose id is not recorded, saying why.

    Keyed by service, or `service/compose-service` when its manifest names several
    compose services. Only a container that runs the image the running version's
    manifest names (BASE_SHA's `image.name:image.tag`) counts: one already on another
    image (started by hand from a newer checkout, say) must not become the image the
    revert points the old tag at. A service with no container yet has none.
    """
    found: dict[str, str] = {}
    notes: list[str] = []
    for service in services:
        declared, project = ctx.declared_before(service)
        if declared.swarm:
            refuse_unless_manager(ctx, service)
            notes.append(
                f"{service}: swarm stack {project.name}; its spec is "
                f"packages/{service}/{declared.compose_file.name} at BASE_SHA "
                f"{ctx.state.base_sha[:12]} with the image ids recorded here"
            )
        for name in project.services:
            if declared.swarm:
                # The tasks meant to run, with a container on this node.
                tasks = [r for r in task_images(ctx, project, name) if r.status == "running"]
                found_image = [(r.configured, r.image_id) for r in tasks]
            else:
                containers = ctx.host.engine.containers_of(project.name, name)
                found_image = [
                    (str(c.attrs["Config"]["Image"]), str(c.attrs["Image"])) for c in containers
                ]
            if not found_image:
                continue
            configured, image_id = found_image[0]
            if configured != declared.image.ref:
                notes.append(
                    f"{service}/{name} runs {configured}, not {declared.image.ref} as its "
                    "manifest at BASE_SHA says: its image is not recorded"
                )
                continue
            found[image_key(service, project.services, name)] = image_id
    return found, notes
