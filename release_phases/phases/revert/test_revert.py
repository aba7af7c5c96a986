"""The revert: old code, old data, old containers, in that order; each step rerunnable."""

import pytest

from release_phases import probing, revert, verify
from release_phases.context import ReleaseContext
from release_phases.steps import Step
from release_phases.wave import Wave

pytestmark = [
    pytest.mark.revert,
    pytest.mark.phase("revert"),
    pytest.mark.order(1),
]


def test_revert_preflight(release: ReleaseContext, step: Step) -> None:
    step.detail("preflight", "\n".join(revert.preflight(release)))


@pytest.mark.not_with("skip_git", reason="--skip-git: the code is left as it is")
def test_revert_code(release: ReleaseContext, step: Step) -> None:
    sha, commands = revert.revert_code(release)
    step.record(REVERT_SHA=sha)
    step.detail("git", "\n".join(commands) or f"already reverted by {sha}")
    step.log_fields.update(revert=sha)


@pytest.mark.side_by_side
def test_restore(release: ReleaseContext, step: Step, service: str, wave: Wave | None) -> None:
    if wave is None:
        revert.restore_service(release, service, step)
    else:  # --parallel: the wave restores the services side by side; this is one of them
        wave.hand_over(service, step)


@pytest.mark.not_with("skip_git", reason="--skip-git: nothing to push")
def test_push(release: ReleaseContext, step: Step) -> None:
    step.detail("git push", revert.push(release))


@pytest.mark.check
def test_reverted_image(release: ReleaseContext, step: Step, service: str) -> None:
    if not (release.repo / "packages" / service / "manifest.yaml").exists():
        pytest.skip(f"{service} did not exist before the release")
    check = verify.image(release, service)
    step.detail("image: expected against actual", check.report)
    check.require()


@pytest.mark.check
def test_reverted_health(release: ReleaseContext, step: Step, service: str) -> None:
    if not (release.repo / "packages" / service / "manifest.yaml").exists():
        pytest.skip(f"{service} did not exist before the release")
    check, result = verify.health_of(release, service)
    step.detail("health probes", probing.probe_table(result))
    if not result.ok:
        probing.keep_logs(release, release.project(release.manifest(service)), step)
    check.require()
