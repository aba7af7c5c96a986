"""After a hotfix release: check it reached main, put prod back on main, say what drifted.

The hotfix is merged when the commit prod runs is an ancestor of origin/main. Then
prod checks out main and fast-forwards it. Services whose package differs between
what the hotfix deployed and main still run the hotfix's version: they are listed,
since each needs a release.
"""

from __future__ import annotations

from release_phases import hostchecks
from release_phases.context import ReleaseContext
from release_phases.errors import ReleaseError
from release_phases.host import git

MAIN = "main"


def check_merged(ctx: ReleaseContext) -> tuple[str, str]:
    """(branch, deployed commit), once the deployed commit is part of origin/main."""
    hostchecks.refuse_dirty(ctx, ctx.git.dirty(), "everything: prod stays where it is")
    branch = ctx.git.branch() or "(detached HEAD)"
    if branch == MAIN:
        raise ReleaseError(
            f"{ctx.repo} is already on {MAIN}: there is no hotfix to return from, and "
            f"pulling {MAIN} here would put unreleased code on prod",
            untouched="everything: prod stays where it is",
            next_command="to ship what is new on main, release its ticket: "
            "pytest -m release --ticket <id>",
        )
    deployed = ctx.git.head()
    ctx.git.fetch()
    main = ctx.git.resolve(f"origin/{MAIN}")
    if main is None:
        raise ReleaseError(
            f"origin has no {MAIN} branch to return to",
            untouched=f"everything: prod stays on {branch}",
            next_command=f"check `git -C {ctx.repo} remote show origin`",
        )
    if not ctx.git.is_ancestor(deployed, main):
        raise ReleaseError(
            f"{branch} is not merged into origin/{MAIN}: the deployed commit {deployed[:12]} "
            f"is not in origin/{MAIN} ({main[:12]}). Returning now would drop the hotfix.",
            untouched=f"everything: prod stays on {branch}",
            next_command="merge the hotfix's pull request into main, then " + ctx.options.command(),
        )
    return branch, deployed


def switch_to_main(ctx: ReleaseContext) -> str:
    checkout = ctx.git.checkout(MAIN)
    if not checkout.ok:
        raise ReleaseError(
            f"`git checkout {MAIN}` failed:\n{checkout.tail(15)}",
            untouched=f"prod stays on {ctx.git.branch()}",
            next_command="fix the cause (git status), then " + ctx.options.command(),
            rc=checkout.returncode,
        )
    result = ctx.git.pull(MAIN)
    if not result.ok:
        raise ReleaseError(
            f"`git pull --ff-only origin {MAIN}` was refused:\n{result.tail(15)}",
            untouched=f"prod is on {MAIN} at {ctx.git.head()[:12]}, not fast-forwarded",
            next_command=f"inspect `git -C {ctx.repo} log --graph HEAD origin/{MAIN}`; prod must "
            "only fast-forward; then " + ctx.options.command(),
            rc=result.returncode,
        )
    return result.output


def clean_state(ctx: ReleaseContext, deployed: str) -> list[str]:
    """Check prod is main, clean; return the services that drifted from what runs."""
    head = ctx.git.head()
    main = ctx.git.resolve(f"origin/{MAIN}")
    problems = []
    if ctx.git.branch() != MAIN:
        problems.append(f"HEAD is on {ctx.git.branch()}, not {MAIN}")
    if head != main:
        problems.append(f"HEAD {head[:12]} is not origin/{MAIN} {main[:12] if main else '?'}")
    dirty = ctx.git.dirty()
    if dirty:
        problems.append("uncommitted changes: " + ", ".join(dirty[:5]))
    if problems:
        raise ReleaseError(
            "prod is not in a clean state on main: " + "; ".join(problems),
            untouched="the containers: nothing was restarted",
            next_command="fix by hand (git status), then " + ctx.options.command(),
        )
    drift = git.changed_services(ctx.git.changed_files(deployed, head))
    return [s for s in drift if (ctx.repo / "packages" / s / "manifest.yaml").exists()]
