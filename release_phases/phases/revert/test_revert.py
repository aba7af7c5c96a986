"""The revert: old code, old data, old containers, in that order; each step rerunnable."""

import pytest

from release_phases import revert, verify

pytestmark = [
    pytest.mark.revert,
    pytest.mark.phase("revert"),
    pytest.mark.order(1),
    pytest.mark.dependency(name="revert", scope="session"),
]


def test_revert_preflight(release, step):
    step.detail("preflight", "\n".join(revert.preflight(release)))


def test_revert_code(release, step):
    if release.options.skip_git:
        pytest.skip("--skip-git: the code is left as it is")
    sha, commands = revert.revert_code(release)
    step.record(REVERT_SHA=sha)
    step.detail("git", "\n".join(commands) or f"already reverted by {sha}")
    step.log_fields.update(revert=sha)


def test_restore(release, step, service):
    revert.restore_service(release, service, step)


def test_push(release, step):
    if release.options.skip_git:
        pytest.skip("--skip-git: nothing to push")
    step.detail("git push", revert.push(release))


def test_reverted_image(release, step, service):
    if not (release.repo / "packages" / service / "manifest.yaml").exists():
        pytest.skip(f"{service} did not exist before the release")
    check = verify.image(release, service)
    step.detail("image: expected against actual", check.report)
    check.require()


def test_reverted_health(release, step, service):
    if not (release.repo / "packages" / service / "manifest.yaml").exists():
        pytest.skip(f"{service} did not exist before the release")
    check, result = verify.health_of(release, service)
    step.detail("health probes", result.summary)
    check.require()
