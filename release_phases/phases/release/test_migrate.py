"""Phase 2, migrate: recreate each changed service and wait until it answers healthy."""

import pytest

from release_phases import migrate

pytestmark = [
    pytest.mark.release,
    pytest.mark.phase("migrate"),
    pytest.mark.order(2),
    pytest.mark.dependency(name="migrate", depends=["prepare"], scope="session"),
]


def test_ready(release, step):
    step.detail("ready", "\n".join(migrate.ready(release, release.state.services)))


def test_migrate(release, step, service):
    migrate.migrate_service(release, service, step)
