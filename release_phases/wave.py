"""A wave: up to N services migrated side by side (`--parallel N`).

Each service is still its own pytest step with its own result: the first step of
the wave starts it, and each step waits for its own service's outcome and reports
it. A service starts once the services its `after:` names in this release are done;
after a failure, or an interrupt, no further service starts, while those already
under way finish and are reported. Only this module knows about threads; the work
itself (`migrate.migrate_service`) is the same as one at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from release_phases.steps import Step


@dataclass(frozen=True)
class Outcome:
    """What one service's work left: its step, and the error it raised (None: passed)."""

    step: Step
    error: BaseException | None


class Wave:
    def __init__(
        self,
        services: Sequence[str],
        after: Mapping[str, Sequence[str]],
        width: int,
        work: Callable[[str, Step], object],
        new_step: Callable[[str], Step],
    ) -> None:
        self.services = list(services)
        # Only the services of this release order it (as in `plan.release_order`).
        self.after = {s: [o for o in after.get(s, ()) if o in services] for s in services}
        self.width = width
        self.work = work
        self.new_step = new_step
        self._changed = threading.Condition()
        self._pending = list(services)
        self._running: set[str] = set()
        self._outcomes: dict[str, Outcome] = {}
        #: Why nothing more starts: a service failed, or the run was interrupted.
        self.halted: str | None = None
        self._pool: ThreadPoolExecutor | None = None

    def outcome(self, service: str) -> Outcome | None:
        """Wait for `service`'s own outcome (starting the wave on the first call); None
        when it will never start, `halted` saying why."""
        with self._changed:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.width, thread_name_prefix="migrate")
                self._fill()
            try:
                while service not in self._outcomes:
                    if service in self._pending and (self.halted or not self._running):
                        return None
                    # A timeout, so the main thread still takes Ctrl-C and SIGTERM here.
                    self._changed.wait(timeout=0.2)
            except BaseException:
                self.halted = self.halted or "the run was interrupted"
                raise
            return self._outcomes[service]

    def hand_over(self, service: str, step: Step) -> None:
        """Be `service`'s step: wait for its outcome, take what it found into `step`, and
        raise its error; skipped (with why) when it never started."""
        import pytest

        outcome = self.outcome(service)
        if outcome is None:
            pytest.skip(f"not started: {self.halted}")
        step.adopt(outcome.step)
        if outcome.error is not None:
            raise outcome.error

    def close(self) -> None:
        """Start nothing more; wait for the services under way."""
        with self._changed:
            self.halted = self.halted or "the run ended"
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def _fill(self) -> None:
        """Start every service that may start now, in release order (lock held)."""
        assert self._pool is not None
        while self.halted is None and len(self._running) < self.width:
            ready = next((s for s in self._pending if self._may_start(s)), None)
            if ready is None:
                return
            self._pending.remove(ready)
            self._running.add(ready)
            self._pool.submit(self._run, ready)

    def _may_start(self, service: str) -> bool:
        return all(
            other in self._outcomes and self._outcomes[other].error is None
            for other in self.after[service]
        )

    def _run(self, service: str) -> None:
        step = self.new_step(service)
        error: BaseException | None = None
        try:
            self.work(service, step)
        except BaseException as exc:  # handed to the service's own step, raised there
            error = exc
        with self._changed:
            self._running.discard(service)
            self._outcomes[service] = Outcome(step, error)
            if error is not None and self.halted is None:
                self.halted = f"the migrate of {service} failed"
            self._fill()
            self._changed.notify_all()
