"""Phase 3, ticket: the ticket's own migration, `releases/<ticket>-*.sh|.ts|.py`.

The framework cannot know that ticket 1234 needs its search index rebuilt once
the new code is live; the ticket's script does. None is a no-op, said as such.
"""

from __future__ import annotations

from release_phases import scripts
from release_phases.context import ReleaseContext
from release_phases.steps import Step


def run_ticket_scripts(ctx: ReleaseContext, step: Step) -> list[str]:
    found = scripts.find_ticket_scripts(ctx.repo, ctx.ticket)
    if not found:
        step.detail("ticket scripts", f"no releases/{ctx.ticket}-*.sh|.ts|.py: nothing to do")
        return []
    scripts.preflight(found)
    for script in found:
        try:
            result = scripts.run_script(
                script,
                host=ctx.host,
                env=ctx.script_env(),
                cwd=ctx.repo,
                timeout=ctx.options.script_timeout,
            )
        except scripts.ScriptFailed as exc:
            step.detail(f"{script.name} (failed)", exc.result.output)
            exc.step = script.name
            later = [s.name for s in found[found.index(script) + 1 :]]
            exc.untouched = "the services: migrate is done, they run the new version" + (
                f"; not run: {' '.join(later)}" if later else ""
            )
            raise
        step.detail(script.name, result.output or "(no output)")
    return [s.name for s in found]
