"""Phase 2, migrate: recreate each changed service and wait until it answers healthy."""

import pytest

from release_phases import migrate
from release_phases.context import ReleaseContext
from release_phases.steps import Step
from release_phases.wave import Wave

pytestmark = [
    pytest.mark.release,
    pytest.mark.phase("migrate"),
    pytest.mark.order(2),
]


def test_ready(release: ReleaseContext, step: Step) -> None:
    step.detail("ready", "\n".join(migrate.ready(release, release.state.services, step)))


@pytest.mark.side_by_side
def test_migrate(release: ReleaseContext, step: Step, service: str, wave: Wave | None) -> None:
    if wave is None:
        migrate.migrate_service(release, service, step)
    else:  # --parallel: the wave migrates the services side by side; this is one of them
        wave.hand_over(service, step)
