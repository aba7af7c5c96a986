"""Return to main: the hotfix is merged, prod is back on main, drift is named."""

import pytest

from release_phases import return_to_main
from release_phases.context import ReleaseContext
from release_phases.steps import Step

pytestmark = [
    pytest.mark.return_to_main,
    pytest.mark.phase("return_to_main"),
    pytest.mark.order(1),
]


def test_hotfix_merged(release: ReleaseContext, step: Step) -> None:
    branch, deployed = return_to_main.check_merged(release)
    step.record(HOTFIX_BRANCH=branch, HOTFIX_SHA=deployed)
    step.detail("hotfix", f"{branch} at {deployed} is in origin/main")


def test_switch_to_main(release: ReleaseContext, step: Step) -> None:
    step.detail("git pull --ff-only origin main", return_to_main.switch_to_main(release))
    step.record(BRANCH="main", MERGE_SHA=release.git.head())


def test_clean_state(release: ReleaseContext, step: Step) -> None:
    drift = return_to_main.clean_state(release, release.state.extra["HOTFIX_SHA"])
    step.record(DRIFT=" ".join(drift))
    step.log_fields.update(drift=" ".join(drift) or "none")
    step.detail(
        "services to release",
        "\n".join(
            f"{s}: main differs from what the hotfix deployed; it needs a release" for s in drift
        )
        or "none: every deployed service matches main",
    )
