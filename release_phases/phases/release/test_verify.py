"""Phase 4, verify: each service runs the manifest's image and answers healthy."""

import pytest

from release_phases import probing, verify
from release_phases.context import ReleaseContext
from release_phases.steps import Step

pytestmark = [
    pytest.mark.release,
    pytest.mark.phase("verify"),
    pytest.mark.order(4),
    pytest.mark.check,
]


def test_image(release: ReleaseContext, step: Step, service: str) -> None:
    check = verify.image(release, service)
    step.detail("image: expected against actual", check.report)
    check.require()


def test_health(release: ReleaseContext, step: Step, service: str) -> None:
    check, result = verify.health_of(release, service)
    step.detail("health probes", probing.probe_table(result))
    if not result.ok:
        probing.keep_logs(release, release.project(release.manifest(service)), step)
    step.log_fields.update(probes=str(len(result.probes)), health=result.summary)
    check.require()
