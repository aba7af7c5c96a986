"""The ledger of one run: what happened, and what it means for the operator.

Pure bookkeeping, with no pytest, Docker, git or files: the plugin tells it that
a step runs, passed or failed, and it answers with the phase transitions to
record (`Began`, `Finished`), the outcome, why later steps were halted, and the
next command. The journal writes what the ledger decides; the terminal summary
and the HTML report both read its `Summary`.

A phase is begun when its first step runs, and finished when its last step is
done or at its first failure, unless that failure is a check's (verify's checks
all run, for a complete picture). A phase with no step at all
(no service changed) is passed through empty, so the state file shows it done
and `--from` a later phase works.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

from release_phases.errors import ReleaseError
from release_phases.options import Options
from release_phases.state import State


class Outcome(Enum):
    NOT_STARTED = "NOT STARTED"
    NOTHING_RAN = "NOTHING RAN"
    COMPLETE = "COMPLETE"
    FAILED = "FAILED"
    #: The selected phases ran; later ones were not selected (`-k migrate`).
    STOPPED = "stopped"


#: What a run that ran to its end says it did, by its last phase (a release: COMPLETE).
DONE_WORDS = {"revert": "REVERTED", "return_to_main": "BACK ON MAIN"}


@dataclass(frozen=True)
class Failure:
    """A step's failure: the operator's error itself when it was one."""

    phase: str
    #: The step's test name, parameters included: `test_migrate[api]`.
    item: str
    service: str | None = None
    error: ReleaseError | None = None
    #: What failed when it was not a ReleaseError (an assertion, a crash).
    text: str = ""
    #: A check's failure (verify's): the other checks still run, the phase goes on.
    check: bool = False

    @property
    def step(self) -> str:
        """The part that failed (`health`, `pre_start_init`), else the step's name."""
        return (self.error.step if self.error else "") or self.item.split("[")[0]

    @property
    def rc(self) -> int:
        return self.error.rc if self.error else 1

    @property
    def message(self) -> str:
        return str(self.error) if self.error else self.text

    @property
    def next_command(self) -> str:
        """The error's own next command (its first line), if it named one."""
        hint = self.error.next_command if self.error else ""
        return hint.splitlines()[0] if hint else ""

    @property
    def where(self) -> str:
        return f"on {self.service}" if self.service else f"at {self.item}"


@dataclass(frozen=True)
class Began:
    phase: str


@dataclass(frozen=True)
class Finished:
    phase: str
    failure: Failure | None = None


Transition = Began | Finished


@dataclass(frozen=True)
class Summary:
    """How the run ended, as the terminal and the report tell it."""

    outcome: Outcome
    #: `COMPLETE` (a revert: `REVERTED`), `FAILED in migrate on web`, `NOT STARTED (...)`.
    headline: str
    #: Where it stopped: `phase migrate, service web, step health (rc 1)`.
    stopped: str
    next_command: str
    failure: Failure | None = None


@dataclass
class Ledger:
    #: The phases this run goes through, in order.
    phases: tuple[str, ...]
    #: The first phase this run executes (`--from`, `-k`).
    start_phase: str
    #: phase -> the id of its last step in this run (from collection).
    last_step: dict[str, str] = field(default_factory=dict)
    #: Phases some of whose steps were deselected.
    deselected: set[str] = field(default_factory=set)
    #: The run's record is open (the lock is held).
    started: bool = False
    #: Why the run could not start: `release halted: the lock is held by ...`.
    refused: str = ""
    entered: list[str] = field(default_factory=list)
    open_phase: str | None = None
    #: phase -> its first failure.
    failures: dict[str, Failure] = field(default_factory=dict)
    #: Steps that ran and passed.
    ran: int = 0

    # -- what happens -----------------------------------------------------------------
    def step_runs(self, phase: str) -> list[Transition]:
        """A step of `phase` runs: close the open phase, pass through empty ones, begin it."""
        if not self.started or phase == self.open_phase or phase in self.entered:
            return []
        done: list[Transition] = []
        if self.open_phase is not None:
            done.append(self._finish(self.open_phase))
        first = (
            self.phases.index(self.entered[-1]) + 1
            if self.entered
            else self.phases.index(self.start_phase)
        )
        for empty in self.phases[first : self.phases.index(phase)]:
            done += [self._begin(empty), self._finish(empty)]
        done.append(self._begin(phase))
        return done

    def step_passed(self) -> None:
        if self.started:
            self.ran += 1

    def step_failed(self, failure: Failure) -> list[Transition]:
        """Record the phase's first failure; the phase ends with it unless it is a check's."""
        if not self.started:
            return []
        done = self.step_runs(failure.phase)  # a step that failed in its setup
        self.failures.setdefault(failure.phase, failure)
        if not failure.check and self.open_phase == failure.phase:
            done.append(self._finish(failure.phase))
        return done

    def step_done(self, phase: str, step_id: str) -> list[Transition]:
        """A step's teardown: the phase ends with its last step."""
        if self.open_phase == phase and self.last_step.get(phase) == step_id:
            return [self._finish(phase)]
        return []

    def end(self, *, clean: bool, stopped_by: ReleaseError | None = None) -> list[Transition]:
        """The session ends: finish what is open; a clean run passes an empty tail.

        A run that did not end cleanly with a phase still open (Ctrl-C, SIGTERM, an
        internal error) did not finish that phase: it is recorded failed, with
        `stopped_by` (or a plain "stopped") as its failure, never done.
        """
        if not self.started:
            return []
        done: list[Transition] = []
        if clean and self.entered and not self.failures:
            done += self._empty_tail()
        phase = self.open_phase
        if phase is not None and not clean and phase not in self.failures:
            error = stopped_by or ReleaseError(
                f"the run stopped before phase {phase} ended", step="stopped"
            )
            self.failures[phase] = Failure(phase=phase, item="(stopped)", error=error)
        if phase is not None:
            done.append(self._finish(phase))
        return done

    def _empty_tail(self) -> list[Transition]:
        """Phases after the last one that ran, with no step at all (not deselected ones),
        happen empty: a ticket-script-only release still verifies nothing and completes."""
        tail = self.phases[self.phases.index(self.entered[-1]) + 1 :]
        if any(p in self.deselected or p in self.last_step for p in tail):
            return []
        done: list[Transition] = []
        if self.open_phase is not None:
            done.append(self._finish(self.open_phase))
        for phase in tail:
            done += [self._begin(phase), self._finish(phase)]
        return done

    def _begin(self, phase: str) -> Began:
        self.entered.append(phase)
        self.open_phase = phase
        return Began(phase)

    def _finish(self, phase: str) -> Finished:
        self.open_phase = None
        return Finished(phase, self.failures.get(phase))

    # -- what it means ------------------------------------------------------------------
    @property
    def first_failure(self) -> Failure | None:
        return next((self.failures[p] for p in self.phases if p in self.failures), None)

    def halt_reason(self) -> str | None:
        """Why the steps after a failure do not run, in the operator's words."""
        if self.refused:
            return self.refused
        failures = list(self.failures.values())
        failure = next((f for f in failures if not f.check), failures[0] if failures else None)
        if failure is None:
            return None
        return f"release halted: {failure.phase} failed {failure.where}"

    def outcome(self) -> Outcome:
        if not self.started:
            return Outcome.NOT_STARTED
        if self.failures:
            return Outcome.FAILED
        if self.ran == 0:
            return Outcome.NOTHING_RAN
        if self.entered and self.entered[-1] == self.phases[-1]:
            return Outcome.COMPLETE
        return Outcome.STOPPED

    def headline(self) -> str:
        outcome = self.outcome()
        if outcome is Outcome.NOT_STARTED:
            return f"NOT STARTED ({self.refused or 'no release step ran'})"
        failure = self.first_failure
        if failure is not None:
            return f"FAILED in {failure.phase}" + (
                f" on {failure.service}" if failure.service else ""
            )
        if outcome is Outcome.STOPPED:
            last = self.entered[-1] if self.entered else "?"
            return f"stopped after {last} (phases after it were not selected)"
        if outcome is Outcome.COMPLETE:
            return DONE_WORDS.get(self.phases[-1], str(outcome.value))
        return str(outcome.value)

    def stopped(self) -> str:
        failure = self.first_failure
        if failure is None:
            if self.outcome() is Outcome.COMPLETE:
                return "nowhere: it ran to the end"
            return self.headline()
        where = [f"phase {failure.phase}"]
        if failure.service:
            where.append(f"service {failure.service}")
        if failure.step:
            where.append(f"step {failure.step}")
        return f"{', '.join(where)} (rc {failure.rc})"

    def next_command(self, options: Options, state: State) -> str:
        """What the operator runs next, given the state as this run leaves it."""
        revert = options.command(mode="revert")
        extra = state.extra
        failure = self.first_failure
        if failure is not None:
            hint = failure.next_command
            if failure.phase == "prepare" and state.merge_sha and state.base_sha != state.merge_sha:
                # The pull is done: a plain rerun would find nothing to pull.
                again = options.command(f"--base-sha {state.base_sha}")
                return f"{hint}; then {again}" if hint else f"fix the cause above, then {again}"
            if failure.phase in ("prepare", "revert", "return_to_main"):
                # These phases can be run again as they are: the error's own hint is best.
                return hint or f"fix the cause above, then {options.command()}"
            return (
                f"fix the cause, then {options.command(f'--from={failure.phase}')}"
                f"   or roll back: {revert}"
            )
        if not self.started:
            return f"see the error above, then {options.command()}"
        drift = extra.get("DRIFT")
        if options.mode == "return_to_main" and drift:
            since = extra.get("HOTFIX_SHA", "<hotfix sha>")
            return (
                f"release what main has beyond the hotfix ({drift}): "
                f"pytest -m release --ticket <id> --base-sha {since}"
            )
        if options.mode != "release":
            return "nothing"
        return f"nothing; to roll back this release: {revert}"

    def summary(self, options: Options, state: State) -> Summary:
        return Summary(
            outcome=self.outcome(),
            headline=self.headline(),
            stopped=self.stopped(),
            next_command=self.next_command(options, state),
            failure=self.first_failure,
        )


#: A step's kind for `dependencies`: an ordinary step, a check, or one of a wave (steps
#: run side by side, `--parallel`).
ORDINARY, CHECK, WAVE = "ordinary", "check", "wave"


def dependencies(steps: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    """What each step depends on, for pytest-dependency: the chain that halts a run.

    `steps` are (id, kind) in run order. A step depends on the step before it,
    so one failure halts everything after it; a check (verify's) depends on the
    last step before the checks only, so every check runs and reports. The steps
    of a wave (run side by side) each depend on the step before the wave, so each
    reports its own result, and the step after the wave depends on all of them.
    """
    found: dict[str, list[str]] = {}
    last: list[str] = []
    wave_base: list[str] | None = None
    wave: list[str] = []
    for step_id, kind in steps:
        if kind == WAVE:
            if wave_base is None:
                wave_base, wave = last, []
            found[step_id] = list(wave_base)
            wave.append(step_id)
            continue
        if wave_base is not None:
            last, wave_base = wave, None
        found[step_id] = list(last)
        if kind != CHECK:
            last = [step_id]
    return found
