"""The ledger, as a table: what a run did -> its outcome, the phases it recorded, the next
command. Pure logic: no pytest run, Docker, git or files."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from release_phases import PHASES
from release_phases.errors import ReleaseError
from release_phases.ledger import Began, Failure, Finished, Ledger, Outcome, Transition
from release_phases.options import Options
from release_phases.state import State

REVERT = "pytest -m revert --ticket 7"


def options(mode: str = "release", **kw: object) -> Options:
    return Options(ticket="7", repo=Path.cwd(), mode=mode, **kw)  # type: ignore[arg-type]


def failure(phase: str, service: str | None = None, **kw: object) -> Failure:
    item = f"test_{phase}[{service}]" if service else f"test_{phase}"
    return Failure(phase=phase, item=item, service=service, **kw)  # type: ignore[arg-type]


@dataclass
class Run:
    """Drive a ledger as the plugin does: steps of phases, in order."""

    phases: tuple[str, ...] = PHASES
    start: str = "prepare"
    #: phase -> its steps' ids, in run order.
    steps: dict[str, list[str]] = field(default_factory=dict)
    recorded: list[Transition] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ledger = Ledger(self.phases, self.start)
        for phase, ids in self.steps.items():
            self.ledger.last_step[phase] = ids[-1]
        self.ledger.started = True

    def passes(self, phase: str, step_id: str) -> Run:
        self.recorded += self.ledger.step_runs(phase)
        self.ledger.step_passed()
        self.recorded += self.ledger.step_done(phase, step_id)
        return self

    def fails(self, fail: Failure, step_id: str) -> Run:
        self.recorded += self.ledger.step_runs(fail.phase)
        self.recorded += self.ledger.step_failed(fail)
        self.recorded += self.ledger.step_done(fail.phase, step_id)
        return self

    def ends(self, *, clean: bool = True) -> Run:
        self.recorded += self.ledger.end(clean=clean)
        return self


RELEASE_STEPS = {
    "prepare": ["pull", "backup[api]"],
    "migrate": ["ready", "migrate[api]"],
    "ticket": ["scripts"],
    "verify": ["image[api]", "health[api]"],
}


def whole_release() -> Run:
    run = Run(steps=RELEASE_STEPS)
    for phase, ids in RELEASE_STEPS.items():
        for step_id in ids:
            run.passes(phase, step_id)
    return run.ends()


def fails_in(
    phase: str, service: str | None, error: ReleaseError | None = None
) -> Callable[[], Run]:
    def drive() -> Run:
        run = Run(steps=RELEASE_STEPS)
        for p in PHASES[: PHASES.index(phase)]:
            for step_id in RELEASE_STEPS[p]:
                run.passes(p, step_id)
        run.fails(failure(phase, service, error=error), RELEASE_STEPS[phase][0])
        return run.ends(clean=False)

    return drive


def only(phase: str) -> Callable[[], Run]:
    """A run of one phase, the others deselected: `--from=verify`, `-k migrate`."""

    def drive() -> Run:
        run = Run(start=phase, steps={phase: RELEASE_STEPS[phase]})
        run.ledger.deselected.update(p for p in PHASES if p != phase)
        for step_id in RELEASE_STEPS[phase]:
            run.passes(phase, step_id)
        return run.ends()

    return drive


resumed_at_verify = only("verify")
only_migrate_selected = only("migrate")


def ticket_script_only() -> Run:
    """No service changed: migrate's readiness step, the script, and verify has no step."""
    steps = {"prepare": ["pull"], "migrate": ["ready"], "ticket": ["scripts"]}
    run = Run(steps=steps)
    for phase, ids in steps.items():
        for step_id in ids:
            run.passes(phase, step_id)
    return run.ends()


def lock_held() -> Run:
    run = Run(steps=RELEASE_STEPS)
    run.ledger.started = False
    run.ledger.refused = "release halted: the lock is held by another release"
    run.recorded += run.ledger.step_failed(failure("prepare"))
    return run.ends(clean=False)


def nothing_ran() -> Run:
    return Run(steps=RELEASE_STEPS).ends()


def reverted() -> Run:
    steps = {"revert": ["preflight", "code", "restore[api]", "push", "image[api]"]}
    run = Run(phases=("revert",), start="revert", steps=steps)
    for step_id in steps["revert"]:
        run.passes("revert", step_id)
    return run.ends()


def revert_fails() -> Run:
    error = ReleaseError("push refused", next_command="git pull --rebase, then rerun the revert")
    run = Run(phases=("revert",), start="revert", steps={"revert": ["preflight", "push"]})
    run.passes("revert", "preflight")
    run.fails(failure("revert", error=error), "push")
    return run.ends(clean=False)


def returned_with_drift() -> Run:
    run = Run(phases=("return_to_main",), start="return_to_main", steps={"return_to_main": ["x"]})
    return run.passes("return_to_main", "x").ends()


def B(p: str) -> Began:
    return Began(p)


def F(p: str) -> Finished:
    return Finished(p)


BASE_SHA_HINT = "pytest -m release --ticket 7 --base-sha <sha>"
RESUME = "fix the cause, then pytest -m release --ticket 7 --from={}   or roll back: " + REVERT
NO_HINT = "fix the cause above, then pytest -m release --ticket 7"


@pytest.mark.parametrize(
    ("drive", "mode", "extra", "outcome", "headline", "next_command"),
    [
        (whole_release, "release", {}, Outcome.COMPLETE, "COMPLETE",
         f"nothing; to roll back this release: {REVERT}"),
        (fails_in("prepare", None, ReleaseError("x", next_command=BASE_SHA_HINT)),
         "release", {}, Outcome.FAILED, "FAILED in prepare", BASE_SHA_HINT),
        (fails_in("prepare", "api"), "release", {}, Outcome.FAILED, "FAILED in prepare on api",
         NO_HINT),
        (fails_in("migrate", "api"), "release", {}, Outcome.FAILED, "FAILED in migrate on api",
         RESUME.format("migrate")),
        (fails_in("ticket", None), "release", {}, Outcome.FAILED, "FAILED in ticket",
         RESUME.format("ticket")),
        (fails_in("verify", "api"), "release", {}, Outcome.FAILED, "FAILED in verify on api",
         RESUME.format("verify")),
        (resumed_at_verify, "release", {}, Outcome.COMPLETE, "COMPLETE",
         f"nothing; to roll back this release: {REVERT}"),
        (only_migrate_selected, "release", {}, Outcome.STOPPED,
         "stopped after migrate (phases after it were not selected)",
         f"nothing; to roll back this release: {REVERT}"),
        (ticket_script_only, "release", {}, Outcome.COMPLETE, "COMPLETE",
         f"nothing; to roll back this release: {REVERT}"),
        (lock_held, "release", {}, Outcome.NOT_STARTED,
         "NOT STARTED (release halted: the lock is held by another release)",
         "see the error above, then pytest -m release --ticket 7"),
        (nothing_ran, "release", {}, Outcome.NOTHING_RAN, "NOTHING RAN",
         f"nothing; to roll back this release: {REVERT}"),
        (reverted, "revert", {}, Outcome.COMPLETE, "REVERTED", "nothing"),
        (revert_fails, "revert", {}, Outcome.FAILED, "FAILED in revert",
         "git pull --rebase, then rerun the revert"),
        (returned_with_drift, "return_to_main", {"DRIFT": "api web", "HOTFIX_SHA": "abc"},
         Outcome.COMPLETE, "BACK ON MAIN",
         "release what main has beyond the hotfix (api web): "
         "pytest -m release --ticket <id> --base-sha abc"),
        (returned_with_drift, "return_to_main", {"DRIFT": ""}, Outcome.COMPLETE, "BACK ON MAIN",
         "nothing"),
    ],
)  # fmt: skip
def test_outcome_headline_and_next_command(drive, mode, extra, outcome, headline, next_command):
    run = drive()
    summary = run.ledger.summary(options(mode), State(ticket="7", extra=extra))
    assert summary.outcome is outcome
    assert summary.headline == headline
    assert summary.next_command == next_command


@pytest.mark.parametrize(
    ("drive", "recorded"),
    [
        (whole_release, [B("prepare"), F("prepare"), B("migrate"), F("migrate"), B("ticket"),
                         F("ticket"), B("verify"), F("verify")]),
        # A halting failure ends its phase at once; no later phase begins.
        (fails_in("migrate", "api"), [B("prepare"), F("prepare"), B("migrate"), "migrate failed"]),
        # Verify's phase ends with its last step, failed.
        (fails_in("verify", "api"), [B("prepare"), F("prepare"), B("migrate"), F("migrate"),
                                     B("ticket"), F("ticket"), B("verify"), "verify failed"]),
        (resumed_at_verify, [B("verify"), F("verify")]),
        # Verify has no step and was not deselected: it happens, empty, at the end.
        (ticket_script_only, [B("prepare"), F("prepare"), B("migrate"), F("migrate"), B("ticket"),
                              F("ticket"), B("verify"), F("verify")]),
        (only_migrate_selected, [B("migrate"), F("migrate")]),
        (lock_held, []),
        (nothing_ran, []),
    ],
)  # fmt: skip
def test_the_phases_recorded(drive, recorded):
    def shown(t: Transition) -> object:
        if isinstance(t, Finished) and t.failure is not None:
            return f"{t.phase} failed"
        return t

    assert [shown(t) for t in drive().recorded] == recorded


def test_a_phase_with_no_step_between_two_that_ran_is_passed_through_empty():
    run = Run(steps={"prepare": ["pull"], "ticket": ["scripts"]})
    run.passes("prepare", "pull").passes("ticket", "scripts").ends()
    assert run.recorded[:6] == [B("prepare"), F("prepare"), B("migrate"), F("migrate"),
                                B("ticket"), F("ticket")]  # fmt: skip


def test_the_halt_reason_names_the_phase_and_the_service_or_the_step():
    assert fails_in("migrate", "api")().ledger.halt_reason() == (
        "release halted: migrate failed on api"
    )
    assert fails_in("ticket", None)().ledger.halt_reason() == (
        "release halted: ticket failed at test_ticket"
    )
    assert whole_release().ledger.halt_reason() is None
    assert lock_held().ledger.halt_reason() == (
        "release halted: the lock is held by another release"
    )


def test_a_checks_failure_lets_the_phase_run_on_and_never_halts_before_a_step_that_did():
    run = Run(phases=("revert",), start="revert", steps={"revert": ["restore", "image", "health"]})
    run.passes("revert", "restore")
    run.fails(failure("revert", "api", check=True), "image")
    assert run.ledger.open_phase == "revert", "a check's failure does not end the phase"
    run.passes("revert", "health")
    assert run.recorded[-1] == Finished("revert", run.ledger.failures["revert"])


def test_where_it_stopped_names_phase_service_step_and_rc():
    error = ReleaseError("unhealthy", step="health", rc=3)
    run = fails_in("migrate", "web", error)()
    assert run.ledger.stopped() == "phase migrate, service web, step health (rc 3)"
    assert whole_release().ledger.stopped() == "nowhere: it ran to the end"


def test_a_failure_keeps_the_error_itself():
    error = ReleaseError("it broke", untouched="the data", next_command="one\nsecond line")
    fail = failure("migrate", "api", error=error)
    assert fail.error is error
    assert fail.message == "it broke\nLeft untouched: the data\nNext: one\nsecond line"
    assert fail.next_command == "one", "the first line of the error's own next command"
    assert failure("migrate", text="AssertionError: boom").message == "AssertionError: boom"


def test_a_run_stopped_with_a_phase_open_records_it_failed_never_done():
    run = Run(steps=RELEASE_STEPS)
    run.passes("prepare", "pull").passes("prepare", "backup[api]")
    run.recorded += run.ledger.step_runs("migrate")  # migrate[api] was running: Ctrl-C
    stop = ReleaseError("the run was stopped by SIGINT during phase migrate", rc=130, step="SIGINT")
    run.recorded += run.ledger.end(clean=False, stopped_by=stop)
    last = run.recorded[-1]
    assert isinstance(last, Finished) and last.phase == "migrate"
    assert last.failure is not None and last.failure.error is stop
    assert (last.failure.rc, last.failure.step) == (130, "SIGINT")
    summary = run.ledger.summary(options(), State(ticket="7"))
    assert summary.headline == "FAILED in migrate"
    assert summary.next_command == RESUME.format("migrate")
    # Stopped without saying why (an internal error): still failed, not done.
    plain = Run(steps=RELEASE_STEPS)
    plain.passes("prepare", "pull")
    plain.recorded += plain.ledger.end(clean=False)
    assert plain.recorded[-1] == Finished("prepare", plain.ledger.failures["prepare"])
    assert plain.ledger.failures["prepare"].step == "stopped"


def test_after_the_pull_a_prepare_failure_names_the_base_sha_to_go_on_with():
    pulled = State(ticket="7", base_sha="a" * 40, merge_sha="b" * 40)
    again = f"pytest -m release --ticket 7 --base-sha {'a' * 40}"
    bare = fails_in("prepare", "api")()
    assert bare.ledger.next_command(options(), pulled) == f"fix the cause above, then {again}"
    hinted = fails_in("prepare", "api", ReleaseError("x", next_command="free some disk"))()
    assert hinted.ledger.next_command(options(), pulled) == f"free some disk; then {again}"
    # Before the pull (no MERGE_SHA yet), the run itself is the command.
    assert bare.ledger.next_command(options(), State(ticket="7")) == NO_HINT


def test_both_commands_of_a_next_line_keep_the_operators_ini_options():
    typed = options(ini_overrides=("release_pull=false",))
    summary = fails_in("migrate", "api")().ledger.summary(typed, State(ticket="7"))
    assert summary.next_command == (
        "fix the cause, then pytest -m release --ticket 7 --from=migrate -o release_pull=false"
        "   or roll back: pytest -m revert --ticket 7 -o release_pull=false"
    )


@pytest.mark.parametrize(("drive", "mode"), [(reverted, "revert"), (whole_release, "release")])
def test_a_run_to_its_end_stopped_nowhere(drive, mode):
    summary = drive().ledger.summary(options(mode), State(ticket="7"))
    assert summary.stopped == "nowhere: it ran to the end"
