"""The journal of a ticket under `.asd/workspace/releases/`: its lock, state file and log.

The only writer of the three. The ledger decides what happened (`Began`,
`Finished`, a step's facts); the journal writes it: the state file atomically
between every step, one fsynced log line per event, the lock held from the first
step to the end of the session. (Backups are data, written by `backup` under
`Paths.backups`.)
"""

from __future__ import annotations

import copy
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from release_phases import atomic, clock, eventlog, leftovers, lock
from release_phases import state as statefile
from release_phases.errors import ConfigError
from release_phases.ledger import Began, Finished, Transition
from release_phases.state import State
from release_phases.steps import Step

#: Step facts that are fields of the state rather than extra keys.
FACT_FIELDS = {"BASE_SHA": "base_sha", "MERGE_SHA": "merge_sha", "BRANCH": "branch"}
#: The `.gitignore` the engine puts in the directories it owns in a deploy repository
#: (`.asd/`, `reports/`): git then lists nothing in them, so `git status` stays quiet and
#: a `git add -A` never commits backups of production data or reports quoting its logs.
IGNORE_ALL = "# Written by release-phases: nothing in this directory belongs in git.\n*\n"


def keep_out_of_git(directory: Path) -> Path:
    """Give an engine-owned directory (made if missing) a `.gitignore` that ignores all
    of it, unless it has one: a directory an older engine made is given one too, and
    a file someone wrote there is never replaced."""
    directory.mkdir(parents=True, exist_ok=True)
    ignore = directory / ".gitignore"
    if not ignore.exists():
        atomic.write(ignore, [IGNORE_ALL.encode()])
    return directory


@dataclass(frozen=True)
class Paths:
    """Where a ticket's files live in a deploy repository."""

    repo: Path
    ticket: str

    @property
    def workspace(self) -> Path:
        return self.repo / ".asd" / "workspace"

    @property
    def state(self) -> Path:
        return statefile.path_for(self.workspace, self.ticket)

    @property
    def log(self) -> Path:
        return self.workspace / "releases" / f"{self.ticket}.log"

    @property
    def lock(self) -> Path:
        return self.workspace / "releases" / ".lock"

    @property
    def backups(self) -> Path:
        return self.workspace / "backups"

    @property
    def reports(self) -> Path:
        return self.repo / "reports"

    def make_workspace(self) -> None:
        """`.asd/`, kept out of git, before anything is written under it."""
        keep_out_of_git(self.repo / ".asd")

    def make_reports(self) -> Path:
        """`reports/`, owner only (the reports quote production logs), kept out of git."""
        return keep_out_of_git(atomic.private_dir(self.reports))

    def found_state(self) -> State | None:
        """The ticket's state file, or None; an unreadable one is an error, never ignored."""
        if not self.state.exists():
            return None
        return statefile.load(self.state, self.ticket)


@dataclass(frozen=True)
class TakeOver:
    """A stale lock taken over: who died holding it and what of theirs was ended."""

    holder: lock.Holder
    #: Processes the dead run left running, sent SIGTERM.
    ended: tuple[leftovers.Proc, ...] = ()
    #: Those of them still there after the grace, sent SIGKILL.
    killed: tuple[leftovers.Proc, ...] = ()
    #: Backup directories it was writing, without a record: removed.
    incomplete: tuple[Path, ...] = ()

    def lines(self) -> list[str]:
        """What the terminal says about it."""
        said = [f"took over the lock from a run that died holding it: {self.holder.describe()}"]
        if self.ended:
            said.append(
                f"ended what that run left running: {leftovers.describe(self.ended)}"
                + (f" (SIGKILL for {leftovers.describe(self.killed)})" if self.killed else "")
            )
        if self.incomplete:
            names = " ".join(str(d) for d in self.incomplete)
            said.append(f"removed the backups it left half written: {names}")
        return said


class Journal:
    """Writes one run's record: the lock, the state file and the event log."""

    def __init__(
        self,
        paths: Paths,
        found: State | None,
        *,
        branch: str,
        ticket_scripts: Sequence[str] = (),
    ) -> None:
        self.paths = paths
        #: The state file as the run was planned from it (None: there was none).
        self.found = found
        #: The live state: what the state file says from the first step on.
        self.state = copy.deepcopy(found) if found else State(ticket=paths.ticket, branch=branch)
        self.ticket_scripts = tuple(ticket_scripts)
        self.held: lock.Acquired | None = None
        #: The stale lock this run took over, if it did.
        self.took_over: TakeOver | None = None
        #: A finished release of this ticket whose per-release keys go at the next pull.
        self.replaces_release = False
        self._phase_t0 = 0.0
        self._writing = threading.RLock()

    @property
    def is_open(self) -> bool:
        return self.held is not None

    def open(self, *, fresh_release: bool, phase: str) -> None:
        """Take the lock and check the state file is still the one the run was planned
        from. Raises ReleaseError (the lock is held) or ConfigError, writing nothing of
        the run's record."""
        self.paths.make_workspace()
        held = lock.acquire(self.paths.lock, self.paths.ticket)
        if held.took_over is not None:
            # First of all: a ticket script or a compose command of the dead run may
            # still be changing what this run is about to read and change.
            taken = end_leftovers(held.took_over)
            # Only now, with its writers ended: a half backup must not stay to look like one.
            self.took_over = replace(taken, incomplete=remove_incomplete(self.paths.backups))
        try:
            now = self.paths.found_state()
            if _text(now) != _text(self.found):
                raise ConfigError(
                    f"state file {self.paths.state} changed while this run was being planned "
                    "(another run of this ticket?)",
                    next_command="look at the log of that run, then run this command again",
                )
        except ConfigError:
            lock.release(held)
            raise
        self.held = held
        if now is not None and fresh_release and now.finished:
            # The ticket is released again after it completed or was reverted. Its old
            # record is copied aside, and its per-release keys stay until the new pull
            # succeeds (see merge): a release that pulls nothing must not cost the old
            # one its revert.
            kept = self.paths.state.with_name(f"{self.paths.ticket}.env.{clock.stamp()}")
            shutil.copy2(self.paths.state, kept)
            self.replaces_release = True
        if self.took_over is not None:
            taken = self.took_over
            self.log(phase, "lock", action="took-over-stale", holder=taken.holder.describe())
            if taken.ended:
                self.log(
                    phase,
                    "lock",
                    action="ended-leftovers",
                    processes=leftovers.describe(taken.ended),
                    sigkill=leftovers.describe(taken.killed) or None,
                )
            if taken.incomplete:
                where = " ".join(str(d.relative_to(self.paths.backups)) for d in taken.incomplete)
                self.log(phase, "lock", action="removed-incomplete-backups", backups=where)

    # -- the process groups of commands, for the lock file (a `shell.Children`) ----------
    def started(self, pid: int) -> None:
        if self.held is not None:
            self.held.started(pid)

    def ended(self, pid: int) -> None:
        if self.held is not None:
            self.held.ended(pid)

    def close(self) -> None:
        if self.held is not None:
            lock.release(self.held)
            self.held = None

    # -- what the ledger decided ----------------------------------------------------------
    def record(self, transitions: Sequence[Transition]) -> None:
        for transition in transitions:
            if isinstance(transition, Began):
                self._begin(transition.phase)
            elif isinstance(transition, Finished):
                self._finish(transition)

    def _begin(self, phase: str) -> None:
        self.state.begin(phase, clock.iso())
        self.save()
        fields: dict[str, str] = {}
        if phase == "migrate":
            fields["services"] = " ".join(self.state.services)
        elif phase == "ticket":
            fields["script"] = " ".join(self.ticket_scripts) or "none"
        self.log(phase, "start", **fields)
        self._phase_t0 = time.monotonic()

    def _finish(self, finished: Finished) -> None:
        failure = finished.failure
        self.state.finish(finished.phase, failure is None, clock.iso())
        self.save()
        duration = f"{round(time.monotonic() - self._phase_t0)}s"
        if failure is None:
            self.log(finished.phase, "done", duration=duration)
        else:
            self.log(
                finished.phase,
                "failed",
                rc=failure.rc,
                service=failure.service,
                step=failure.step,
                duration=duration,
            )

    def merge(self, step: Step, *, passed: bool) -> None:
        """A step's facts into the state file; a passed step gets its log line."""
        st = self.state
        if self.replaces_release and "MERGE_SHA" in step.facts:
            st.services, st.backups, st.images, st.extra = [], {}, {}, {}
            self.replaces_release = False
        for key, value in step.facts.items():
            if key == "SERVICES":
                st.services = value.split()
            elif key in FACT_FIELDS:
                setattr(st, FACT_FIELDS[key], value)
            else:
                st.extra[key] = value
        st.backups.update(step.backups)
        st.images.update(step.images)
        self.save()
        if passed:
            fields = {"step": step.name.split("[")[0], "service": step.service, **step.log_fields}
            self.log(step.phase, "step", **fields)

    def note(self, key: str, value: str) -> None:
        """A fact the state file must hold before the step ends (PULL_FROM, just before
        the pull: a run killed during it must not leave HEAD moved and nothing saying
        from where)."""
        if key not in statefile.RECORDED_KEYS:
            raise ValueError(f"{key}: not a key steps record (state.RECORDED_KEYS)")
        with self._writing:
            self.state.extra[key] = value
            self.save()

    def note_backup(self, service: str, stamp: str) -> None:
        """A backup finished in the middle of a step (migrate's, taken with the service
        stopped): named in BACKUPS at once. Named only at the step's end, a crash in
        between would lose it, and the resumed step would back up the new version's
        data in its place."""
        with self._writing:
            self.state.backups[service] = stamp
            self.save()

    # -- writing --------------------------------------------------------------------------
    def save(self) -> None:
        # From a --parallel thread too (note_backup): one whole file at a time.
        with self._writing:
            statefile.write(self.paths.state, self.state)

    def log(self, phase: str, event: str, **fields: object) -> None:
        line = eventlog.format_line(self.paths.ticket, phase, event, None, **fields)
        eventlog.append(self.paths.log, line)


def end_leftovers(holder: lock.Holder, *, grace: float = leftovers.GRACE) -> TakeOver:
    """End what a run that died holding the lock left running (see `leftovers`)."""
    doomed = holder.left_running(leftovers.scan())
    killed = leftovers.end(doomed, grace=grace)
    return TakeOver(holder, tuple(doomed), tuple(killed))


def remove_incomplete(root: Path) -> tuple[Path, ...]:
    """Remove the backup directories a killed run left without a record."""
    from release_phases.backup.record import incomplete  # loads the backup package

    found = tuple(incomplete(root))
    for directory in found:
        shutil.rmtree(directory, ignore_errors=True)
    return found


def _text(state: State | None) -> str | None:
    return None if state is None else state.to_text()
