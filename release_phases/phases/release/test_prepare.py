"""Phase 1, prepare: check the host, pull the merge, find what changed, back it up."""

import time

import pytest

from release_phases import prepare
from release_phases.context import ReleaseContext
from release_phases.steps import Step

pytestmark = [
    pytest.mark.release,
    pytest.mark.phase("prepare"),
    pytest.mark.order(1),
]


def test_preflight(release: ReleaseContext, step: Step) -> None:
    step.detail("preflight", "\n".join(prepare.preflight(release)))


def test_pull(release: ReleaseContext, step: Step) -> None:
    pulled = prepare.pull(release)
    step.record(BASE_SHA=pulled.base_sha, MERGE_SHA=pulled.merge_sha, BRANCH=release.options.branch)
    step.detail("git pull --ff-only", pulled.output)
    step.log_fields.update(base=pulled.base_sha, merge=pulled.merge_sha)


def test_changed_services(release: ReleaseContext, step: Step) -> None:
    services, scripts = prepare.discover(release, release.state.base_sha, release.state.merge_sha)
    step.record(SERVICES=" ".join(services))
    step.detail("changed services", " ".join(services) or "(none)")
    step.detail("ticket scripts", " ".join(scripts) or "(none)")
    step.log_fields.update(services=" ".join(services))
    # What each runs now is what a revert brings back (IMAGES).
    images, notes = prepare.running_images(release, services)
    step.images.update(images)
    shown = [f"{key}={image}" for key, image in images.items()] + notes
    step.detail("images running before the release", "\n".join(shown) or "(none)")


def test_backup(release: ReleaseContext, step: Step, service: str) -> None:
    began = time.monotonic()
    declared, project = release.declared_before(service)
    if declared.ignored:
        step.detail(
            "the running version's manifest: keys left out",
            "\n".join(declared.ignored)
            + "\n(accepted by an older engine; "
            + (
                "the backup follows this release's backup: section instead)"
                if any(note.startswith("backup") for note in declared.ignored)
                else "its backup: section is read as written)"
            ),
        )
        step.log_fields.update(ignored=",".join(n.split()[0] for n in declared.ignored))
    record = prepare.backup_service(release, declared, project)
    if record is None:
        step.detail("backup", f"{service}: taken in migrate (backup.when: stopped)")
        step.log_fields.update(backup="in-migrate")
        return
    step.backups[service] = record.stamp
    step.detail("backup", record.describe())
    # As for a backup taken stopped: how long the archive and dumps took, in the log.
    step.log_fields.update(stamp=record.stamp, backup_seconds=f"{time.monotonic() - began:.1f}")
