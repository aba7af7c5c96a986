"""The plan of a run: which services, which steps, known before any step runs.

A release is planned at collection time from a fetch that moves nothing but the
remote-tracking refs, so `--collect-only` is a dry run; a resume, a revert and a
return to main are planned from the state file and the worktree. Every check
that can refuse a run happens here, before anything is written.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from release_phases import PHASES, manifest, scripts
from release_phases import state as statefile
from release_phases.context import ReleaseContext
from release_phases.errors import ConfigError, ReleaseError
from release_phases.host import git
from release_phases.manifest import Manifest


@dataclass
class Plan:
    """What this run will do, known before any step runs."""

    start_phase: str
    base_sha: str = ""
    incoming_sha: str = ""
    services: list[str] = field(default_factory=list)
    manifests: dict[str, Manifest] = field(default_factory=dict)
    ticket_scripts: list[str] = field(default_factory=list)
    #: A problem of the host (origin unreachable) that preflight reports as a failed step.
    problem: ReleaseError | None = None
    #: service -> the directory its e2e tests are collected from.
    e2e: dict[str, Path] = field(default_factory=dict)
    #: What pytest collects the e2e tests from (a snapshot of MERGE, or the worktree).
    e2e_args: list[Path] = field(default_factory=list)
    #: The temporary snapshot of the e2e tests, removed at the end of the run.
    e2e_snapshot: Path | None = None

    def describe(self) -> list[str]:
        lines = [f"start phase: {self.start_phase}"]
        if self.base_sha:
            lines.append(f"BASE_SHA {self.base_sha}  ->  incoming {self.incoming_sha or '?'}")
        lines.append(f"services: {' '.join(self.services) or '(none)'}")
        lines.append(f"ticket scripts: {' '.join(self.ticket_scripts) or '(none)'}")
        if self.e2e:
            lines.append(f"e2e tests: {' '.join(self.e2e)}")
        if self.problem:
            lines.append(f"problem (preflight will fail): {self.problem.what}")
        return lines


def check_repo(repo: Path) -> None:
    if not (repo / ".git").exists():
        raise ConfigError(
            f"--repo {repo} is not a git checkout of a deploy repo",
            next_command="pytest -m release --ticket <id> --repo <path to the deploy repo>",
        )


def saved_if_any(ctx: ReleaseContext) -> statefile.State | None:
    """The ticket's state file, or None; an unreadable one is an error, never ignored."""
    if not ctx.state_path.exists():
        return None
    return ctx.saved_state()


def finished(saved: statefile.State) -> bool:
    """A release that completed, or was reverted: a new release may start afresh."""
    return saved.phase_status == "done" and saved.phase in ("verify", "revert")


def refuse_fresh_over(ctx: ReleaseContext, saved: statefile.State | None) -> None:
    """A new prepare must not run over a release in progress: it would pull nothing and
    replace the backups that revert needs."""
    if saved is None or finished(saved) or not saved.done("prepare"):
        return
    where = f"PHASE={saved.phase} PHASE_STATUS={saved.phase_status} in {ctx.state_path}"
    revert = f"pytest -m revert --ticket {ctx.ticket}"
    if saved.phase == "revert":
        raise ConfigError(
            f"ticket {ctx.ticket} is being reverted ({where}); a release cannot start over it",
            next_command=f"finish the revert: {revert}",
        )
    resume = next(p for p in PHASES if not saved.done(p))
    raise ConfigError(
        f"ticket {ctx.ticket} is in the middle of a release ({where}). Starting it again "
        "from prepare would pull nothing and replace the backups a revert needs.",
        next_command=f"resume: {ctx.options.command(f'--from={resume}')}   or roll back: {revert}",
    )


def plan_fresh(ctx: ReleaseContext) -> Plan:
    """Plan a release from prepare: what origin/BRANCH would bring in."""
    opts = ctx.options
    check_repo(ctx.repo)
    refuse_fresh_over(ctx, saved_if_any(ctx))
    plan = Plan(start_phase="prepare")
    if opts.base_sha:
        base = ctx.git.resolve(opts.base_sha)
        if base is None:
            raise ConfigError(
                f"--base-sha {opts.base_sha} is not a commit in {ctx.repo}",
                next_command=f"find the HEAD from before the pull with `git -C {ctx.repo} "
                "reflog`, then " + opts.command("--base-sha <that sha>"),
            )
        plan.base_sha = base
    else:
        plan.base_sha = ctx.git.head()
    try:
        ctx.git.fetch()
    except ReleaseError as exc:
        plan.problem = ReleaseError(
            f"origin is not reachable from {ctx.repo}: {exc.what}",
            untouched="everything: nothing was pulled, backed up or restarted",
            next_command="check the network and `git remote -v`, then rerun " + opts.command(),
        )
        return plan
    incoming = ctx.git.resolve(f"origin/{opts.branch}")
    if incoming is None:
        raise ConfigError(
            f"--branch {opts.branch}: origin has no branch of that name",
            next_command=f"check the name with `git -C {ctx.repo} branch -r`",
        )
    plan.incoming_sha = incoming
    plan.services, plan.manifests = services_between(ctx, plan.base_sha, incoming)
    plan.ticket_scripts = [
        f"releases/{name}"
        for name in sorted(ctx.git.list_dir(incoming, "releases"))
        if scripts.is_ticket_script(name, opts.ticket)
    ]
    snapshot_e2e(ctx, plan, incoming)
    return plan


def snapshot_e2e(ctx: ReleaseContext, plan: Plan, ref: str) -> None:
    """Copy the e2e tests as of `ref` out of git, so they can be collected before the pull.

    The copy goes to a temporary directory, not the deploy repo: a dry run must
    not write there. It keeps the `packages/<service>/e2e/` layout, so test ids
    read the same as when they are collected from the worktree.
    """
    root: Path | None = None
    for service, m in plan.manifests.items():
        if not m.e2e_enabled:
            continue
        files = ctx.git.files_under(ref, f"packages/{service}/e2e")
        if not files:
            continue
        if root is None:
            root = Path(tempfile.mkdtemp(prefix=f"release-phases-e2e-{ctx.ticket}-"))
            plan.e2e_args.append(root)
            plan.e2e_snapshot = root
        for name in files:
            target = root / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(ctx.git.show_bytes(ref, name))
        plan.e2e[service] = root / "packages" / service / "e2e"


def services_between(
    ctx: ReleaseContext, base: str, merge: str
) -> tuple[list[str], dict[str, Manifest]]:
    """Changed `packages/<service>/` with a manifest at `merge`, validated as of `merge`."""
    found: dict[str, Manifest] = {}
    for service in git.changed_services(ctx.git.changed_files(base, merge)):
        rel = f"packages/{service}"
        text = ctx.git.show(merge, f"{rel}/manifest.yaml")
        if text is None:
            continue  # not deployable, or removed by this release
        found[service] = manifest.parse(
            text,
            service=service,
            package_dir=ctx.repo / rel,
            source=f"{rel}/manifest.yaml",
            exists=lambda name, rel=rel: ctx.git.exists(merge, f"{rel}/{name}"),
        )
    return list(found), found


def plan_resume(ctx: ReleaseContext, start_phase: str) -> Plan:
    """Plan a run that starts at `start_phase` from the saved state."""
    check_repo(ctx.repo)
    saved = ctx.saved_state()
    if saved.phase == "revert":
        raise ConfigError(
            f"ticket {ctx.ticket} was reverted (PHASE=revert PHASE_STATUS={saved.phase_status} "
            f"in {ctx.state_path}): a reverted release cannot be resumed",
            next_command=f"finish the revert if it failed (pytest -m revert --ticket "
            f"{ctx.ticket}); to ship the ticket again, merge it again and run "
            f"pytest -m release --ticket {ctx.ticket}",
        )
    earlier = PHASES[: PHASES.index(start_phase)]
    missing = [p for p in earlier if not saved.done(p)]
    if missing:
        where = f"{saved.phase} {saved.phase_status}" if saved.phase else "no phase recorded"
        raise ConfigError(
            f"cannot start at {start_phase}: phase {missing[0]} of ticket {ctx.ticket} is not "
            f"done in {ctx.state_path} (it says {where})",
            next_command=ctx.options.command(f"--from={missing[0]}")
            if missing[0] != "prepare"
            else ctx.options.command(),
        )
    manifests = {s: ctx.manifest(s) for s in saved.services}
    e2e = {
        s: ctx.repo / "packages" / s / "e2e"
        for s, m in manifests.items()
        if m.e2e_enabled and (ctx.repo / "packages" / s / "e2e").is_dir()
    }
    return Plan(
        e2e=e2e,
        e2e_args=list(e2e.values()),
        start_phase=start_phase,
        base_sha=saved.base_sha,
        incoming_sha=saved.merge_sha,
        services=list(saved.services),
        manifests=manifests,
        ticket_scripts=[s.name for s in scripts.find_ticket_scripts(ctx.repo, ctx.ticket)],
    )


def plan_revert(ctx: ReleaseContext) -> Plan:
    """Undo what the state file says was released: its services in reverse order."""
    check_repo(ctx.repo)
    saved = ctx.saved_state()
    if not saved.base_sha or not saved.merge_sha:
        raise ConfigError(
            f"{ctx.state_path} has no BASE_SHA/MERGE_SHA: ticket {ctx.ticket} never got past "
            "the pull, so there is nothing to revert",
        )
    return Plan(
        start_phase="revert",
        base_sha=saved.base_sha,
        incoming_sha=saved.merge_sha,
        services=list(reversed(saved.services)),
    )


def plan_return(ctx: ReleaseContext) -> Plan:
    check_repo(ctx.repo)
    return Plan(start_phase="return_to_main")
