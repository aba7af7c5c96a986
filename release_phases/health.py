"""Is the service healthy? Ask it every way its manifest declares, and keep every probe.

A manifest declares one or more kinds of check; each is a `Check` here:

- ``HttpCheck``: the endpoint answers the expected status (``health.endpoint``);
- ``TcpCheck``: ``host:port`` accepts a connection (``health.tcp``);
- ``DockerHealthCheck``: a container's own HEALTHCHECK says ``healthy`` (``health.docker``),
  one check per container;
- ``CommandCheck``: an argv run in the service's first container exits 0
  (``health.command``).

Two ways to ask: ``poll`` probes every check at a steady short interval until all
pass in one round or a deadline passes (after a recreate, when the answer is
expected within seconds), and ``poll_with_backoff`` spaces rounds out
exponentially within a budget. Both return a ``HealthResult`` holding every
probe of every check, so an operator sees what each said, not just that it
failed. A ``Watch`` can end a wait at once: a container that exited or
restarted will not become healthy by waiting. ``wait_healthy`` and
``check_with_backoff`` are the same for one HTTP endpoint.

Choices for HTTP:
- Redirects are not followed: a health endpoint that redirects (to a login page,
  say) has not said it is healthy; a manifest can expect 301/302 if it means that.
- Proxy settings from the environment are ignored (``trust_env=False``): health
  endpoints are on this host, and a proxy's answer is not the service's.
- Each probe opens a fresh connection (no keep-alive), so it proves the service
  accepts connections now, not that an old socket is still open.
- Only the status line is read, never the body.
- Each probe's network timeout is cut to the time left, with a floor of one
  interval, so a hung endpoint ends the wait at most an interval late. (httpx
  timeouts bound each network operation; a server dribbling its status line a
  byte at a time could stretch one probe further.)
"""

from __future__ import annotations

import functools
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import httpx

    from release_phases.host.shell import Result

DEFAULT_INTERVAL = 0.15
DEFAULT_REQUEST_TIMEOUT = 5.0


@dataclass(frozen=True)
class Probe:
    """One attempt of one check: when it started, what came back, how long it took."""

    at: str
    status: int | None = None
    error: str | None = None
    latency_ms: float = 0.0
    #: endpoint, tcp, docker or command: which kind of check made it.
    kind: str = "endpoint"
    #: What was asked: the URL, `host:port`, the container, the command.
    target: str = ""
    passed: bool = False
    #: What a check other than HTTP heard (`accepted`, `starting`, `exit 1: ...`).
    said: str = ""

    @property
    def outcome(self) -> str:
        if self.said:
            return self.said
        return f"got {self.status}" if self.status is not None else f"failed: {self.error}"


@dataclass(frozen=True)
class Folded:
    """Probes in a row of one check that all said the same, shown as one line between
    the first and the last of them: `got 404 x34, 0.2 s apart`."""

    sample: Probe
    #: How many were folded (the first and the last, kept around this, not counted).
    count: int
    #: Seconds between two of them, on average over the whole run of the same answer.
    apart: float
    #: The fastest and the slowest of them, in ms.
    latency_ms: tuple[float, float]

    @property
    def outcome(self) -> str:
        return f"{self.sample.outcome} x{self.count}, {_seconds(self.apart)} s apart"


def _seconds(value: float) -> str:
    """`0.15`, `0.2`, `5`, `12`: two significant digits at most, no trailing zeros."""
    if value >= 10:
        return f"{value:.0f}"
    return f"{value:.2f}".rstrip("0").rstrip(".") or "0"


def _at(probe: Probe) -> float:
    try:
        return datetime.fromisoformat(probe.at).timestamp()
    except ValueError:
        return 0.0


def fold(probes: Sequence[Probe], keep: int = 3) -> list[Probe | Folded]:
    """The probes with each run of the same answer from the same check folded.

    A run is a check's probes in a row (its own, whichever other checks were probed
    in between) with the same outcome. A run longer than ``keep`` becomes its first
    probe, one `Folded` line, and its last probe: what it said first and last, and
    when, stay exact. The lines keep the order of the probes they stand for.
    """
    by_target: dict[tuple[str, str], list[int]] = {}
    for index, probe in enumerate(probes):
        by_target.setdefault((probe.kind, probe.target), []).append(index)
    placed: list[tuple[int, Probe | Folded]] = []
    for indexes in by_target.values():
        run: list[int] = []
        for index in [*indexes, -1]:  # -1 ends the last run
            same = run and index >= 0 and _same(probes[run[0]], probes[index])
            if same or not run:
                run.append(index)
                continue
            placed += _folded_run(probes, run, keep)
            run = [index]
    placed.sort(key=lambda pair: pair[0])
    return [line for _, line in placed]


def _same(a: Probe, b: Probe) -> bool:
    return a.outcome == b.outcome and a.passed == b.passed


def _folded_run(
    probes: Sequence[Probe], run: list[int], keep: int
) -> list[tuple[int, Probe | Folded]]:
    if len(run) <= keep:
        return [(i, probes[i]) for i in run]
    first, last = probes[run[0]], probes[run[-1]]
    middle = [probes[i] for i in run[1:-1]]
    apart = (_at(last) - _at(first)) / (len(run) - 1)
    latencies = [p.latency_ms for p in middle]
    folded = Folded(middle[0], len(middle), apart, (min(latencies), max(latencies)))
    return [(run[0], first), (run[1], folded), (run[-1], last)]


class Check(Protocol):
    """One way of asking whether the service is healthy."""

    kind: str
    target: str

    def probe(self, timeout: float) -> Probe: ...


def now() -> str:
    """A probe's time: UTC, to the millisecond."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


_now = now


def _describe(exc: Exception, timeout: float) -> str:
    import httpx

    if isinstance(exc, httpx.ConnectTimeout):
        return f"no connection within {timeout:.2g}s"
    if isinstance(exc, httpx.ReadTimeout):
        # Connected: the endpoint took the request and never answered it.
        return f"no response within {timeout:.2g}s (the probe's timeout) on an accepted connection"
    if isinstance(exc, httpx.TimeoutException):
        return f"no response within {timeout:.2g}s"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context for the run's every check. httpx builds a new one for each
    client by default, loading the CA bundle each time: about 0.1 s a check here,
    which a release of many services paid twice per service (migrate and verify)."""
    import httpx

    return httpx.create_ssl_context()


class HttpCheck:
    """The endpoint answers `expected_code` (status line only, no redirects, no proxy)."""

    kind = "endpoint"

    def __init__(self, endpoint: str, expected_code: int) -> None:
        import httpx  # loaded when a check is first made, not with the plugin

        self.target = endpoint
        self.expected_code = expected_code
        self.client: httpx.Client = httpx.Client(
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_keepalive_connections=0),
            verify=_tls_context(),
        )

    def probe(self, timeout: float) -> Probe:
        import httpx

        at = _now()
        began = time.monotonic()
        status: int | None = None
        error: str | None = None
        try:
            with self.client.stream("GET", self.target, timeout=timeout) as response:
                status = response.status_code
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            error = _describe(exc, timeout)
        return Probe(
            at=at,
            status=status,
            error=error,
            latency_ms=(time.monotonic() - began) * 1000,
            target=self.target,
            passed=status == self.expected_code,
        )

    def close(self) -> None:
        self.client.close()


class TcpCheck:
    """`host:port` accepts a TCP connection (closed at once)."""

    kind = "tcp"

    def __init__(self, host: str, port: int) -> None:
        self.address = (host, port)
        self.target = f"{host}:{port}"

    def probe(self, timeout: float) -> Probe:
        at = _now()
        began = time.monotonic()
        try:
            with socket.create_connection(self.address, timeout=timeout):
                said, passed = "accepted", True
        except TimeoutError:
            said, passed = f"no connection within {timeout:.2g}s", False
        except OSError as exc:
            said, passed = f"refused: {exc.strerror or exc}", False
        latency = (time.monotonic() - began) * 1000
        return Probe(
            at=at, latency_ms=latency, kind=self.kind, target=self.target, passed=passed, said=said
        )


class DockerHealthCheck:
    """One container's own HEALTHCHECK status is `healthy` (read from the engine)."""

    kind = "docker"

    def __init__(self, container: str, status: Callable[[], str | None]) -> None:
        #: Asks the engine for the container's health status (None: it has no HEALTHCHECK).
        self.status = status
        self.target = container

    def probe(self, timeout: float) -> Probe:
        at = _now()
        began = time.monotonic()
        try:
            status = self.status()
        except Exception as exc:  # the SDK raises several kinds for "cannot tell"
            said, passed = f"cannot read its state: {exc}", False
        else:
            passed = status == "healthy"
            said = status or "no HEALTHCHECK (image or compose healthcheck: needed)"
        latency = (time.monotonic() - began) * 1000
        return Probe(
            at=at, latency_ms=latency, kind=self.kind, target=self.target, passed=passed, said=said
        )


class CommandCheck:
    """An argv, run inside the service's container, exits 0."""

    kind = "command"

    def __init__(self, argv: Sequence[str], run: Callable[[float], Result], shown: str) -> None:
        #: Runs the command (through the host layer) within a timeout.
        self.run = run
        self.argv = list(argv)
        self.target = shown

    def probe(self, timeout: float) -> Probe:
        at = _now()
        began = time.monotonic()
        result = self.run(timeout)
        if result.timed_out:
            said = f"no exit within {timeout:.2g}s"
        else:
            tail = result.tail(1).strip()
            said = f"exit {result.returncode}" + (f": {tail}" if tail else "")
        latency = (time.monotonic() - began) * 1000
        return Probe(
            at=at,
            latency_ms=latency,
            kind=self.kind,
            target=self.target,
            passed=result.ok,
            said=said,
        )


#: Something that ends a wait early: returns why (a container exited), or "".
Watch = Callable[[], str]
#: Told after each round that did not pass: seconds waited, and that round's probes.
OnRound = Callable[[float, Sequence[Probe]], None]


@dataclass
class HealthResult:
    ok: bool
    expected_code: int
    limit: float
    elapsed: float
    probes: list[Probe] = field(default_factory=list)
    #: Why the wait ended before its limit (a container exited), if it did.
    stopped: str = ""

    @property
    def last(self) -> Probe | None:
        return self.probes[-1] if self.probes else None

    @property
    def targets(self) -> list[str]:
        return list(dict.fromkeys(p.target for p in self.probes))

    def _http_only(self) -> bool:
        return all(p.kind == "endpoint" for p in self.probes)

    @property
    def summary(self) -> str:
        """One line for an operator, e.g. ``200 after 7 probes in 1.4s``."""
        count = len(self.probes)
        probes = f"{count} probe{'' if count == 1 else 's'}"
        if self.ok:
            if self._http_only():
                return f"{self.expected_code} after {probes} in {self.elapsed:.1f}s"
            kinds = ", ".join(self.kinds_seen())
            return f"healthy by {kinds} after {probes} in {self.elapsed:.1f}s"
        if self.stopped:
            return f"{self.stopped} ({probes} in {self.elapsed:.1f}s)"
        if self._http_only() and len(self.targets) <= 1:
            last = self.last
            said = f"last probe {last.outcome}" if last else "no probe was made"
            return (
                f"timed out after {self.limit:g}s: {said} "
                f"(expected {self.expected_code}, {probes} in {self.elapsed:.1f}s)"
            )
        failing = [f"{p.kind} {p.target} {p.outcome}" for p in self.last_round() if not p.passed]
        return (
            f"timed out after {self.limit:g}s: {'; '.join(failing) or 'no probe was made'} "
            f"({probes} in {self.elapsed:.1f}s)"
        )

    def kinds_seen(self) -> list[str]:
        return list(dict.fromkeys(p.kind for p in self.probes))

    def last_round(self) -> list[Probe]:
        """The last probe of each target."""
        last: dict[str, Probe] = {}
        for probe in self.probes:
            last[probe.target] = probe
        return list(last.values())


class _Clock:
    def __init__(self, limit: float, floor: float, request_timeout: float) -> None:
        self.started = time.monotonic()
        self.deadline = self.started + limit
        self.floor = floor
        self.request_timeout = request_timeout

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def timeout(self) -> float:
        return min(self.request_timeout, max(self.remaining(), self.floor))


def _round(checks: Sequence[Check], clock: _Clock, probes: list[Probe]) -> bool:
    """Probe every check once; all passed?"""
    passed = True
    for check in checks:
        probe = check.probe(clock.timeout())
        probes.append(probe)
        passed = passed and probe.passed
    return passed


def poll(
    checks: Sequence[Check],
    timeout: float,
    interval: float = DEFAULT_INTERVAL,
    *,
    expected_code: int = 200,
    watch: Watch | None = None,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    on_round: OnRound | None = None,
) -> HealthResult:
    """Probe every check each ``interval`` until all pass in one round, ``timeout``
    passes, or ``watch`` says waiting is pointless; ``on_round`` hears of each round
    that did not pass.

    Rounds start ``interval`` apart (sooner ones wait, slow ones are followed at
    once); the last one may start at the deadline and is given one interval.
    """
    clock = _Clock(timeout, interval, request_timeout)
    probes: list[Probe] = []

    def result(ok: bool, stopped: str = "") -> HealthResult:
        return HealthResult(ok, expected_code, timeout, clock.elapsed(), probes, stopped)

    while True:
        began = time.monotonic()
        if _round(checks, clock, probes):
            return result(True)
        if on_round is not None:
            on_round(clock.elapsed(), probes[-len(checks) :])
        stopped = watch() if watch else ""
        if stopped:
            return result(False, stopped)
        if clock.remaining() <= 0:
            return result(False)
        pause = interval - (time.monotonic() - began)
        time.sleep(max(0.0, min(pause, clock.remaining())))


def backoff_delays(first_delay: float, factor: float, max_delay: float) -> Iterator[float]:
    """Pauses between attempts: first_delay, times factor each time, capped at max_delay."""
    if first_delay <= 0 or factor < 1 or max_delay < first_delay:
        raise ValueError(
            "backoff needs first_delay > 0, factor >= 1 and max_delay >= first_delay, got "
            f"{first_delay}, {factor}, {max_delay}"
        )
    delay = first_delay
    while True:
        yield delay
        delay = min(delay * factor, max_delay)


def backoff_schedule(
    budget: float, first_delay: float = 0.2, factor: float = 2.0, max_delay: float = 5.0
) -> list[float]:
    """When each attempt starts (seconds from the first) if probes took no time.

    The last pause is cut short so the final attempt lands on the budget.
    """
    offsets = [0.0]
    for delay in backoff_delays(first_delay, factor, max_delay):
        if offsets[-1] >= budget:
            return offsets
        offsets.append(round(min(offsets[-1] + delay, budget), 6))
    raise AssertionError("unreachable")  # pragma: no cover


def poll_with_backoff(
    checks: Sequence[Check],
    budget: float = 30,
    first_delay: float = 0.2,
    factor: float = 2.0,
    max_delay: float = 5,
    *,
    expected_code: int = 200,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    on_round: OnRound | None = None,
) -> HealthResult:
    """Rounds of every check with exponential backoff until all pass or ``budget`` passes
    (``on_round`` hears of each round that did not).

    Pauses follow ``backoff_delays``; the time probes take counts against the
    budget; the last pause is cut so the final round starts at the budget.
    """
    clock = _Clock(budget, first_delay, request_timeout)
    probes: list[Probe] = []
    for delay in backoff_delays(first_delay, factor, max_delay):
        if _round(checks, clock, probes):
            return HealthResult(True, expected_code, budget, clock.elapsed(), probes)
        if on_round is not None:
            on_round(clock.elapsed(), probes[-len(checks) :])
        if clock.remaining() <= 0:
            break
        time.sleep(min(delay, clock.remaining()))
    return HealthResult(False, expected_code, budget, clock.elapsed(), probes)


def wait_healthy(
    endpoint: str,
    expected_code: int,
    timeout: float,
    interval: float = DEFAULT_INTERVAL,
    *,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
) -> HealthResult:
    """`poll` of one HTTP endpoint."""
    check = HttpCheck(endpoint, expected_code)
    try:
        return poll(
            [check],
            timeout,
            interval,
            expected_code=expected_code,
            request_timeout=request_timeout,
        )
    finally:
        check.close()


def check_with_backoff(
    endpoint: str,
    expected_code: int,
    budget: float = 30,
    first_delay: float = 0.2,
    factor: float = 2.0,
    max_delay: float = 5,
    *,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
) -> HealthResult:
    """`poll_with_backoff` of one HTTP endpoint."""
    check = HttpCheck(endpoint, expected_code)
    try:
        return poll_with_backoff(
            [check],
            budget,
            first_delay,
            factor,
            max_delay,
            expected_code=expected_code,
            request_timeout=request_timeout,
        )
    finally:
        check.close()
