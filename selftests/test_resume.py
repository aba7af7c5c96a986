"""Halting, `--from` and `-k`: the gaps of pytest-dependency closed by the plugin."""

from __future__ import annotations

import subprocess
import sys

import pytest

from release_phases import state as statefile
from selftests.support import engine
from selftests.support.scenario import v1_running_v2_merged
from selftests.test_prepare import HOLD_LOCK

pytestmark = pytest.mark.docker


@pytest.fixture
def released(deploy, make_service):
    """A completed release of api and web."""
    v1_running_v2_merged(deploy, make_service)
    run = engine.run(deploy.prod, "1234")
    assert run.rc == 0, run
    assert (run.state.phase, run.state.phase_status) == ("verify", "done")
    return run


def test_k_verify_reruns_only_the_checks_and_updates_the_state(deploy, released):
    seen = len(released.events)
    run = engine.run(deploy.prod, "1234", "-k", "verify")
    assert run.rc == 0, run
    assert "4 passed" in run.output and "deselected" in run.output, run
    new = run.events[seen:]
    assert {e["phase"] for e in new} == {"verify"}
    assert (run.state.phase, run.state.phase_status) == ("verify", "done")
    _no_warning_about_the_deselected_steps(run)


def test_from_verify_is_the_same_as_k_verify(deploy, released):
    run = engine.run(deploy.prod, "1234", "--from=verify")
    assert run.rc == 0, run
    assert "4 passed" in run.output, run
    _no_warning_about_the_deselected_steps(run)


def _no_warning_about_the_deselected_steps(run: engine.Run) -> None:
    """The checks depend on ticket's step, deselected: pytest-order, which reads the
    dependency marks, must not see them ("Cannot resolve the dependency marker"),
    nor anything else warn about it."""
    assert "Cannot resolve" not in run.output, run
    assert "WARNING" not in run.output, run


def test_k_with_a_phase_name_does_not_match_substrings(deploy, make_service):
    """Gap 3: plain pytest -k would also pick test_migrate[verify-api]."""
    v1_running_v2_merged(deploy, make_service, ("verify-api",))
    run = engine.run(deploy.prod, "1234")
    assert run.rc == 0, run
    rerun = engine.run(deploy.prod, "1234", "-k", "verify", "--collect-only", "-q")
    assert rerun.rc == 0, rerun
    picked = [line for line in rerun.output.splitlines() if "::" in line]
    assert picked and all("test_verify.py" in line for line in picked), rerun
    # The checks depend on a deselected step (registered as passed): nobody warns.
    assert "Cannot resolve" not in rerun.output, rerun


@pytest.mark.parametrize("how", [("-k", "verify"), ("--from=verify",), ("--from=migrate",)])
def test_resuming_without_a_state_file_is_a_usage_error(deploy, how):
    deploy.clone_prod()
    run = engine.run(deploy.prod, "55", *how)
    assert run.rc == 4, run
    assert "no state file" in run.output and "55.env" in run.output
    assert not (deploy.prod / ".asd").exists(), "nothing was written"


def test_another_tickets_state_is_refused(deploy):
    deploy.clone_prod()
    path = deploy.prod / ".asd/workspace/releases/55.env"
    statefile.write(path, statefile.State(ticket="56"))
    before = path.read_text()
    run = engine.run(deploy.prod, "55", "-k", "verify")
    assert run.rc == 4, run
    assert "belongs to ticket 56" in run.output
    assert path.read_text() == before


def test_verify_after_a_failed_migrate_is_refused(deploy, make_service):
    """Gap 1: the deselected dependency is not done, so this is a usage error, not exit 0."""
    v1_running_v2_merged(deploy, make_service, ("api",), v2_health={"api": "error"}, timeout=2)
    failed = engine.run(deploy.prod, "1234")
    assert failed.rc == 1
    before = failed.state_path.read_text()
    for how in (("-k", "verify"), ("--from=verify",), ("--from=ticket",)):
        run = engine.run(deploy.prod, "1234", *how)
        assert run.rc == 4, run
        assert "migrate" in run.output and "not done" in run.output, run
        assert failed.state_path.read_text() == before


def test_verify_runs_every_check_and_a_failed_one_fails_the_phase(
    deploy, make_service, docker_client
):
    """web's checks pass after api's failed; the phase still ends failed (see also
    test_dependency_gaps.py for the shared dependency name)."""
    services = v1_running_v2_merged(deploy, make_service)
    run = engine.run(deploy.prod, "1234")
    assert run.rc == 0, run
    # Stop api: its verify checks fail, web's still pass after it.
    for c in docker_client.containers.list(
        filters={"label": f"com.docker.compose.project={services['api'].project}"}
    ):
        c.stop(timeout=1)
    run = engine.run(deploy.prod, "1234", "-k", "verify")
    assert run.rc == 1, run
    assert "2 failed, 2 passed" in run.output, run
    assert (run.state.phase, run.state.phase_status) == ("verify", "failed")
    failed = run.event("verify", "failed")
    assert failed["service"] == "api" and failed["rc"] == "1"
    assert "pytest -m revert --ticket 1234" in run.output


def test_a_run_where_no_release_step_ran_does_not_exit_0(deploy, released):
    run = engine.run(deploy.prod, "1234", "-k", "verify and nosuchservice")
    assert run.rc == 5, run  # pytest's "no tests ran", not a usage error


def test_a_fresh_release_over_one_in_progress_is_refused(deploy, make_service):
    """A plain rerun after a failed migrate would pull nothing and replace the backups."""
    v1_running_v2_merged(deploy, make_service, ("api",), v2_health={"api": "error"}, timeout=2)
    failed = engine.run(deploy.prod, "1234")
    assert failed.event("migrate", "failed")
    before = failed.state_path.read_text()
    for how in ((), ("--base-sha", failed.state.base_sha)):
        run = engine.run(deploy.prod, "1234", *how)
        assert run.rc == 4, run
        assert "in the middle of a release" in run.output and "--from=migrate" in run.output
        assert failed.state_path.read_text() == before


@pytest.mark.reliability("bad input", "a completed release run again with nothing new")
def test_a_completed_release_run_again_with_nothing_new_says_so_and_writes_nothing(
    deploy, released
):
    state, log = released.state_path.read_bytes(), released.log_path.read_bytes()
    run = engine.run(deploy.prod, "1234")
    assert run.rc == 4, run
    assert f"already released at MERGE_SHA {released.state.merge_sha}" in run.output, run
    assert "nothing was changed" in run.output
    assert f"--base-sha {released.state.base_sha}" in run.output, "how to deploy it again"
    assert released.state_path.read_bytes() == state and released.log_path.read_bytes() == log
    kept = sorted(p.name for p in released.state_path.parent.iterdir())
    assert kept == [".lock", "1234.env", "1234.log"], "no old record was copied aside"


def test_k_verify_while_another_run_holds_the_lock_runs_no_check(deploy, released):
    """The checks depend on steps of an earlier run: the refusal must stop them too."""
    lock_path = deploy.prod / ".asd/workspace/releases/.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(lock_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        seen = len(released.events)
        run = engine.run(deploy.prod, "1234", "-k", "verify")
        assert run.rc != 0, run
        assert "other-1" in run.output, run
        assert "3 skipped" in run.output and " passed" not in run.output, run
        assert "release halted: the lock is held by another release" in run.output
        assert len(released.events) == seen, "nothing was logged"
    finally:
        holder.kill()
        holder.wait()
