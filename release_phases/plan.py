"""The plan of a run: which services, which steps, known before any step runs.

A release is planned at collection time from a fetch that moves nothing but the
remote-tracking refs, so `--collect-only` is a dry run; a resume, a revert and a
return to main are planned from the state file and the worktree. Every check
that can refuse a run happens here, before anything is written.

Planning reads (git, the worktree, the state file as found) and returns a
frozen `Plan`; it knows nothing of pytest or of the run's context.
"""

from __future__ import annotations

import posixpath
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from release_phases import PHASES, manifest, scripts
from release_phases import state as statefile
from release_phases.errors import ConfigError, ReleaseError
from release_phases.host.git import Git, changed_services
from release_phases.journal import Paths
from release_phases.manifest import Manifest
from release_phases.options import Options, validate_service
from release_phases.state import State


@dataclass(frozen=True)
class Plan:
    """What this run will do, known before any step runs."""

    start_phase: str
    base_sha: str = ""
    incoming_sha: str = ""
    #: HEAD when the run was planned: prepare refuses to pull if it moved since.
    head_sha: str = ""
    #: A prepare an earlier run left unfinished after its pull, resumed from its BASE_SHA.
    resumes_prepare: bool = False
    services: tuple[str, ...] = ()
    ticket_scripts: tuple[str, ...] = ()
    #: Services whose manifest this release deletes: not released, left running.
    removed: tuple[str, ...] = ()
    #: A problem of the host (origin unreachable) that preflight reports as a failed step.
    problem: ReleaseError | None = None
    #: service -> the directory its e2e tests are collected from.
    e2e: Mapping[str, Path] = field(default_factory=dict)
    #: What pytest collects the e2e tests from (a snapshot of MERGE, or the worktree).
    e2e_args: tuple[Path, ...] = ()
    #: The temporary snapshot of the e2e tests, removed at the end of the run.
    e2e_snapshot: Path | None = None

    def describe(self) -> list[str]:
        lines = [f"start phase: {self.start_phase}"]
        if self.resumes_prepare:
            lines.append(
                "resuming the prepare an earlier run left unfinished after its pull "
                "(BASE_SHA from the state file; the backups are taken again)"
            )
        if self.base_sha:
            lines.append(f"BASE_SHA {self.base_sha}  ->  incoming {self.incoming_sha or '?'}")
        lines.append(f"services: {' '.join(self.services) or '(none)'}")
        lines.append(f"ticket scripts: {' '.join(self.ticket_scripts) or '(none)'}")
        if self.removed:
            lines.append(
                f"removed by this release, left running (stop them by hand): "
                f"{' '.join(self.removed)}"
            )
        if self.e2e:
            lines.append(f"e2e tests: {' '.join(self.e2e)}")
        if self.problem:
            lines.append(f"problem (preflight will fail): {self.problem.what}")
        return lines


def make(options: Options, start_phase: str, git: Git, paths: Paths, found: State | None) -> Plan:
    """The plan of this run, from its options and the state file as found (the repo
    checked by `check_repo`)."""
    if options.mode == "revert":
        return plan_revert(paths, found)
    if options.mode == "return_to_main":
        return Plan(start_phase="return_to_main")
    if start_phase == "prepare":
        return plan_fresh(options, git, paths, found)
    return plan_resume(options, start_phase, paths, found)


def check_repo(options: Options) -> None:
    """Refuse a deploy repository that is not a git checkout, saying where it was
    looked for and how to point elsewhere."""
    repo = options.repo
    if (repo / ".git").exists():
        return
    here = replace(options, repo=Path.cwd())
    raise ConfigError(
        f"no deploy repository at {repo} ({options.repo_source}): it is not a git "
        "checkout (no .git there)",
        next_command="run it in the deploy repository (the git checkout holding "
        "packages/<service>/manifest.yaml), or name that with --repo: "
        + here.command("--repo <path to the deploy repo>"),
    )


def refuse_not_a_deploy_repo(
    options: Options, git: Git, paths: Paths, base: str, incoming: str
) -> None:
    """A git checkout that holds no service, neither now nor on origin, and whose merge
    brings no script of this ticket either, is not a deploy repository (this project's
    own clone, say): nothing there may be pulled or run. A ticket-script-only release
    of a repository without services stays possible: its merge brings the script."""
    if any(
        PurePosixPath(f).name == "manifest.yaml" and f.count("/") == 2
        for ref in dict.fromkeys((base, incoming))
        for f in git.files_in(ref, ["packages"])
    ):
        return
    merged = git.changed_files(base, incoming) if base != incoming else []
    if any(
        f.startswith("releases/") and scripts.is_ticket_script(f.split("/", 1)[1], options.ticket)
        for f in merged
    ):
        return
    here = replace(options, repo=Path.cwd())
    raise ConfigError(
        f"{paths.repo} ({options.repo_source}) is not a deploy repository: no"
        f" packages/<service>/manifest.yaml at HEAD or at origin/{options.branch}, and"
        f" no releases/{options.ticket}-* script merged since HEAD; nothing was pulled",
        next_command="run it in the deploy repository, or name that with --repo: "
        + here.command("--repo <path to the deploy repo>"),
    )


def _required(paths: Paths, found: State | None) -> State:
    """The state file a resume or a revert needs; refused when there is none."""
    if found is None:
        raise statefile.not_found(paths.state, paths.ticket)
    return found


def refuse_fresh_over(options: Options, paths: Paths, saved: State | None) -> None:
    """A new prepare must not run over a release in progress: it would pull nothing and
    replace the backups that revert needs."""
    if saved is None or saved.finished or not saved.done("prepare"):
        return
    where = f"PHASE={saved.phase} PHASE_STATUS={saved.phase_status} in {paths.state}"
    revert = options.command(mode="revert")
    if saved.phase == "revert":
        raise ConfigError(
            f"ticket {options.ticket} is being reverted ({where}); a release cannot start over it",
            next_command=f"finish the revert: {revert}",
        )
    resume = next(p for p in PHASES if not saved.done(p))
    raise ConfigError(
        f"ticket {options.ticket} is in the middle of a release ({where}). Starting it again "
        "from prepare would pull nothing and replace the backups a revert needs.",
        next_command=f"resume: {options.command(f'--from={resume}')}   or roll back: {revert}",
    )


def refuse_released_again(
    options: Options, paths: Paths, found: State | None, head: str, incoming: str
) -> None:
    """A completed release run again with nothing new is not a new release: say so and
    write nothing (a prepare would find nothing to pull and record a failure over it)."""
    if options.base_sha or found is None or not (found.finished and found.phase == "verify"):
        return
    if head == incoming == found.merge_sha:
        raise ConfigError(
            f"ticket {options.ticket} is already released at MERGE_SHA {found.merge_sha} "
            f"({paths.state} says PHASE=verify done), and origin/{options.branch} has "
            "nothing new since",
            next_command="nothing to do; to deploy the same code again on purpose: "
            + options.command(f"--base-sha {found.base_sha}"),
        )


def interrupted_after_pull(found: State | None, head: str, git: Git) -> str | None:
    """An earlier run of this ticket pulled and stopped before prepare was done (killed,
    Ctrl-C, a failed backup). Planned plainly again, it would find nothing to pull: it
    goes on from where that run pulled from, which this returns (else None): its
    BASE_SHA when its pull step finished (HEAD is its MERGE_SHA), or PULL_FROM, saved
    just before the pull, when it was killed during it."""
    if found is None or found.phase != "prepare" or found.done("prepare"):
        return None
    if found.base_sha and found.merge_sha == head:
        base = found.base_sha
    else:
        base = found.extra.get("PULL_FROM", "")
    if not base or base == head or not git.is_ancestor(base, head):
        return None
    return base


def plan_fresh(options: Options, git: Git, paths: Paths, found: State | None) -> Plan:
    """Plan a release from prepare: what origin/BRANCH would bring in."""
    refuse_fresh_over(options, paths, found)
    if options.base_sha:
        resolved = git.resolve(options.base_sha)
        if resolved is None:
            raise ConfigError(
                f"--base-sha {options.base_sha} is not a commit in {paths.repo}",
                next_command=f"find the HEAD from before the pull with `git -C {paths.repo} "
                "reflog`, then " + options.command("--base-sha <that sha>"),
            )
        base = resolved
    else:
        base = git.head()
    head = base if not options.base_sha else git.head()
    pulled_from = None if options.base_sha else interrupted_after_pull(found, head, git)
    resumes = pulled_from is not None
    if pulled_from is not None:
        base = pulled_from
    try:
        git.fetch()
    except ReleaseError as exc:
        url = git.remote_url() or "no URL set"
        problem = ReleaseError(
            f"origin ({url}) is not reachable from {paths.repo}: {exc.what}",
            untouched="everything: nothing was pulled, backed up or restarted",
            next_command=f"check the network and `git -C {paths.repo} remote -v`, then rerun "
            + options.command(),
        )
        return Plan(start_phase="prepare", base_sha=base, head_sha=head, problem=problem)
    incoming = git.resolve(f"origin/{options.branch}")
    if incoming is None:
        raise ConfigError(
            f"--branch {options.branch}: origin has no branch of that name",
            next_command=f"check the name with `git -C {paths.repo} branch -r`",
        )
    refuse_released_again(options, paths, found, base, incoming)
    refuse_not_a_deploy_repo(options, git, paths, base, incoming)
    manifests, removed = services_between(git, paths.repo, base, incoming)
    ticket_scripts = tuple(
        f"releases/{name}"
        for name in sorted(git.list_dir(incoming, "releases"))
        if scripts.is_ticket_script(name, options.ticket)
    )
    e2e, snapshot = snapshot_e2e(git, options.ticket, manifests, incoming)
    return Plan(
        start_phase="prepare",
        base_sha=base,
        incoming_sha=incoming,
        head_sha=head,
        resumes_prepare=resumes,
        services=tuple(manifests),
        ticket_scripts=ticket_scripts,
        removed=tuple(removed),
        e2e=e2e,
        e2e_args=(snapshot,) if snapshot else (),
        e2e_snapshot=snapshot,
    )


def snapshot_e2e(
    git: Git, ticket: str, manifests: Mapping[str, Manifest], ref: str
) -> tuple[dict[str, Path], Path | None]:
    """Copy the e2e tests as of `ref` out of git, so they can be collected before the pull.

    The copy goes to a temporary directory, not the deploy repo: a dry run must
    not write there. It keeps the `packages/<service>/e2e/` layout, so test ids
    read the same as when they are collected from the worktree.
    """
    root: Path | None = None
    e2e: dict[str, Path] = {}
    for service, m in manifests.items():
        if not m.e2e_enabled:
            continue
        files = git.files_under(ref, f"packages/{service}/e2e")
        if not files:
            continue
        if root is None:
            root = Path(tempfile.mkdtemp(prefix=f"release-phases-e2e-{ticket}-"))
        for name in files:
            target = root / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(git.show_bytes(ref, name))
        e2e[service] = root / "packages" / service / "e2e"
    return e2e, root


def services_between(
    git: Git, repo: Path, base: str, merge: str
) -> tuple[dict[str, Manifest], list[str]]:
    """Changed `packages/<service>/` with a manifest at `merge`, validated as of `merge`;
    and those whose manifest `merge` deletes (removed by the release)."""
    found: dict[str, Manifest] = {}
    removed: list[str] = []
    services = changed_services(git.changed_files(base, merge))
    # Two git processes for every changed service together, not a few for each.
    texts = git.show_many(merge, [f"packages/{s}/manifest.yaml" for s in services])
    files = git.files_in(merge, [f"packages/{s}/" for s in services])
    for service in services:
        rel = f"packages/{service}"
        data = texts[f"{rel}/manifest.yaml"]
        if data is None:
            if git.exists(base, f"{rel}/manifest.yaml"):
                removed.append(service)
            continue  # not deployable, or removed by this release
        validate_service(service, f"{rel}/manifest.yaml")
        text = manifest.decode(data, f"{rel}/manifest.yaml")

        def exists(name: str, rel: str = rel) -> bool:
            return posixpath.normpath(f"{rel}/{name}") in files

        found[service] = manifest.parse(
            text,
            service=service,
            package_dir=repo / rel,
            source=f"{rel}/manifest.yaml",
            exists=exists,
        )
    _refuse_unknown_after(git, merge, found)
    order = release_order({name: m.after for name, m in found.items()})
    return {name: found[name] for name in order}, removed


def _refuse_unknown_after(git: Git, merge: str, manifests: Mapping[str, Manifest]) -> None:
    """Every name an `after:` gives is a service of the repository at `merge`."""
    named = {
        (name, other)
        for name, m in manifests.items()
        for other in m.after
        if other not in manifests
    }
    for name, other in sorted(named):
        validate_service(other, f"packages/{name}/manifest.yaml: after")
    paths = sorted({f"packages/{other}/manifest.yaml" for _, other in named})
    there = git.show_many(merge, paths) if paths else {}
    for name, other in sorted(named):
        if there[f"packages/{other}/manifest.yaml"] is None:
            source = f"packages/{name}/manifest.yaml"
            raise ConfigError(
                f"invalid manifest {source}: after names {other}, which is no service "
                f"(packages/{other}/manifest.yaml does not exist)",
                next_command=f"fix {source} and commit the fix, then rerun the release",
            )


def release_order(after: Mapping[str, Sequence[str]]) -> list[str]:
    """The services in the order they are migrated: each after the services its
    `after:` names that are in the release too; otherwise by name. A cycle is refused."""
    waiting = {
        name: {o for o in others if o in after and o != name} for name, others in after.items()
    }
    order: list[str] = []
    while waiting:
        ready = sorted(name for name, others in waiting.items() if not others)
        if not ready:
            cycle = " -> ".join(_a_cycle(waiting))
            raise ConfigError(
                f"the services' `after:` make a cycle: {cycle}; none of them could go first",
                next_command="remove one of those `after:` entries, commit and merge it, then "
                "rerun the release",
            )
        first = ready[0]
        order.append(first)
        del waiting[first]
        for others in waiting.values():
            others.discard(first)
    return order


def _a_cycle(waiting: Mapping[str, set[str]]) -> list[str]:
    """One cycle among services that all wait (each has a waited-for name)."""
    path = [min(waiting)]
    while True:
        nxt = min(waiting[path[-1]])
        if nxt in path:
            return [*path[path.index(nxt) :], nxt]
        path.append(nxt)


def plan_resume(options: Options, start_phase: str, paths: Paths, found: State | None) -> Plan:
    """Plan a run that starts at `start_phase` from the saved state."""
    saved = _required(paths, found)
    ticket = options.ticket
    if saved.phase == "revert":
        raise ConfigError(
            f"ticket {ticket} was reverted (PHASE=revert PHASE_STATUS={saved.phase_status} "
            f"in {paths.state}): a reverted release cannot be resumed",
            next_command=f"finish the revert if it failed ({options.command(mode='revert')}); "
            f"to ship the ticket again, merge it again and run {options.command(mode='release')}",
        )
    earlier = PHASES[: PHASES.index(start_phase)]
    missing = [p for p in earlier if not saved.done(p)]
    if missing:
        where = f"{saved.phase} {saved.phase_status}" if saved.phase else "no phase recorded"
        raise ConfigError(
            f"cannot start at {start_phase}: phase {missing[0]} of ticket {ticket} is not "
            f"done in {paths.state} (it says {where})",
            next_command=options.command(f"--from={missing[0]}")
            if missing[0] != "prepare"
            else options.command(),
        )
    manifests = {s: manifest.load(paths.repo, s) for s in saved.services}
    e2e = {
        s: paths.repo / "packages" / s / "e2e"
        for s, m in manifests.items()
        if m.e2e_enabled and (paths.repo / "packages" / s / "e2e").is_dir()
    }
    return Plan(
        e2e=e2e,
        e2e_args=tuple(e2e.values()),
        start_phase=start_phase,
        base_sha=saved.base_sha,
        incoming_sha=saved.merge_sha,
        services=tuple(saved.services),
        ticket_scripts=tuple(s.name for s in scripts.find_ticket_scripts(paths.repo, ticket)),
    )


def plan_revert(paths: Paths, found: State | None) -> Plan:
    """Undo what the state file says was released: its services in reverse order."""
    saved = _required(paths, found)
    if not saved.base_sha or not saved.merge_sha:
        raise ConfigError(
            f"{paths.state} has no BASE_SHA/MERGE_SHA: ticket {paths.ticket} never got past "
            "the pull, so there is nothing to revert",
        )
    return Plan(
        start_phase="revert",
        base_sha=saved.base_sha,
        incoming_sha=saved.merge_sha,
        services=tuple(reversed(saved.services)),
    )
