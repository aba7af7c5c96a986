"""Where a long step stands, told while it runs: a whole line at a time.

A health wait, a backup's archives and a dump can each take minutes; an operator
watching the terminal, or reading a log file of the run later, should see them
move. Every such line goes through `say`, the one place that prints progress:

- a line is whole and plain (no carriage return, no colour), so a log file of the
  run reads as the terminal did;
- it names its service first (`web: waiting for health 5 s, ... got 503`), so the
  lines of services migrated side by side (`--parallel`) are told apart, and a
  lock keeps them from cutting each other;
- it goes nowhere until the plugin installs a sink (`install`): a quiet run
  (`-q`), or code run outside a release (the selftests' direct calls), prints none.

The rest of the module is pure: when a line is due (`Every`), and what it says.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from release_phases import masking

if TYPE_CHECKING:
    from release_phases.health import Probe
    from release_phases.options import Options

#: Seconds between two lines about the same wait.
EVERY_SECONDS = 5.0
#: Bytes between two lines about the same archive or dump, when they come faster.
EVERY_BYTES = 64 * 1024 * 1024

Sink = Callable[[str], None]

_sink: Sink | None = None
#: Held while a line is written: lines from threads (`--parallel`) stay whole.
_LOCK = threading.Lock()


def install(sink: Sink | None) -> None:
    """Where progress lines go from now on; None: nowhere."""
    global _sink
    _sink = sink


def say(service: str | None, text: str) -> None:
    """One progress line, prefixed with the service it is about; secrets masked."""
    sink = _sink
    if sink is None:
        return
    line = masking.mask(f"{service}: {text}" if service else text)
    with _LOCK:
        sink(line)


def telling() -> bool:
    """Whether progress lines go anywhere (work spent only on them can be skipped)."""
    return _sink is not None


class Every:
    """When the next line about one long piece of work is due: every ``seconds`` of
    it, or sooner once ``amount`` more units (bytes) are done. Pure: the caller
    gives the time elapsed and the amount done so far."""

    def __init__(self, seconds: float = EVERY_SECONDS, amount: int | None = None) -> None:
        self.seconds = seconds
        self.amount = amount
        self._next_time = seconds
        self._next_amount = amount

    def due(self, elapsed: float, done: int = 0) -> bool:
        by_time = elapsed >= self._next_time
        by_amount = self._next_amount is not None and done >= self._next_amount
        if not (by_time or by_amount):
            return False
        # The next line a whole period after this one, not after the one missed:
        # a slow round that skips a mark must not be followed by a burst of lines.
        self._next_time = (elapsed // self.seconds + 1) * self.seconds
        if self.amount is not None:
            self._next_amount = (done // self.amount + 1) * self.amount
        return True


class Meter:
    """Bytes of one archive or dump as they arrive, told when due (`Every`):
    `api: volume web-data: 128.0 MiB archived so far`; then, if that was told or
    ``always``, the total."""

    def __init__(
        self,
        service: str,
        what: str,
        verb: str = "archived",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.service = service
        self.what = what
        self.verb = verb
        self.clock = clock
        self.began = clock()
        self.every = Every(EVERY_SECONDS, EVERY_BYTES)
        self.told = False

    def update(self, total: int) -> None:
        if self.every.due(self.clock() - self.began, total):
            self.told = True
            say(self.service, f"{self.what}: {size(total)} {self.verb} so far")

    def end(self, total: int, *, always: bool = False) -> None:
        if self.told or always:
            seconds = self.clock() - self.began
            say(self.service, f"{self.what}: {size(total)} {self.verb} in {seconds:.1f} s")


@contextlib.contextmanager
def ticking(tick: Callable[[], None], seconds: float = EVERY_SECONDS) -> Iterator[None]:
    """Call ``tick`` every ``seconds`` in a thread while the block runs (for work that
    goes on outside this process, such as a dump written by `compose exec`)."""
    if not telling():
        yield
        return
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(seconds):
            tick()

    thread = threading.Thread(target=run, name="progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


# -- what the lines say --------------------------------------------------------------------


def size(count: int) -> str:
    """Bytes as an operator reads them: `6.0 MiB`."""
    if count < 1024:
        return f"{count} B"
    value = count / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def answer(probe: Probe) -> str:
    """What one check said, named: `http://…/health got 503`, `tcp 127.0.0.1:5432 refused`."""
    if probe.kind == "endpoint":
        return f"{probe.target} {probe.outcome}"
    return f"{probe.kind} {probe.target} {probe.outcome}"


def waiting(elapsed: float, last_round: Sequence[Probe]) -> str:
    """`waiting for health 5 s, http://…/health got 503`: the last answer of each check."""
    said = "; ".join(answer(p) for p in last_round) or "no probe answered yet"
    return f"waiting for health {elapsed:.0f} s, {said}"


def header(options: Options, compose: str, health_timeout: float) -> list[str]:
    """The run's configuration as resolved, for pytest's header: enough to tell from a
    log file what this run was told to do and with what."""
    stop = (
        f"{options.stop_timeout} s"
        if options.stop_timeout is not None
        else "Compose's rule (stop_grace_period, else 10 s)"
    )
    mode = options.mode + (f" from {options.from_phase}" if options.from_phase else "")
    return [
        f"release-phases: {mode} of ticket {options.ticket} in {options.repo},"
        f" branch {options.branch}",
        f"compose: {compose}",
        f"timeouts: script {options.script_timeout:g} s, compose {options.compose_timeout:g} s,"
        f" stop {stop}, health {health_timeout:g} s unless the manifest says",
        f"parallel: {options.parallel}, pull missing images: {'yes' if options.pull else 'no'}",
    ]
