"""Phase 1, prepare: check the host, pull the merge, find what changed, back it up."""

import pytest

from release_phases import prepare

pytestmark = [
    pytest.mark.release,
    pytest.mark.phase("prepare"),
    pytest.mark.order(1),
    pytest.mark.dependency(name="prepare", scope="session"),
]


def test_preflight(release, step):
    step.detail("preflight", "\n".join(prepare.preflight(release)))


def test_pull(release, step):
    pulled = prepare.pull(release)
    step.record(BASE_SHA=pulled.base_sha, MERGE_SHA=pulled.merge_sha, BRANCH=release.options.branch)
    step.detail("git pull --ff-only", pulled.output)
    step.log_fields.update(base=pulled.base_sha, merge=pulled.merge_sha)


def test_changed_services(release, step):
    services, scripts = prepare.discover(release, release.state.base_sha, release.state.merge_sha)
    step.record(SERVICES=" ".join(services))
    step.detail("changed services", " ".join(services) or "(none)")
    step.detail("ticket scripts", " ".join(scripts) or "(none)")
    step.log_fields.update(services=" ".join(services))


def test_backup(release, step, service):
    record = prepare.backup_service(release, service)
    step.backups[service] = record.stamp
    step.detail("backup", record.describe())
    step.log_fields.update(stamp=record.stamp)
