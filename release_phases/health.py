"""Is the service answering? Poll its health endpoint and keep every probe.

Two ways to ask: ``wait_healthy`` polls at a steady short interval until a
deadline (after a recreate, when the answer is expected within seconds), and
``check_with_backoff`` spaces attempts out exponentially within a budget. Both
return a ``HealthResult`` holding every attempt, so an operator sees what the
endpoint said, not just that it failed.

Choices, the same for both:
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

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

DEFAULT_INTERVAL = 0.15
DEFAULT_REQUEST_TIMEOUT = 5.0


@dataclass(frozen=True)
class Probe:
    """One attempt: when it started, what came back, how long it took."""

    at: str
    status: int | None
    error: str | None
    latency_ms: float

    @property
    def outcome(self) -> str:
        return f"got {self.status}" if self.status is not None else f"failed: {self.error}"


@dataclass
class HealthResult:
    ok: bool
    expected_code: int
    limit: float
    elapsed: float
    probes: list[Probe] = field(default_factory=list)

    @property
    def last(self) -> Probe | None:
        return self.probes[-1] if self.probes else None

    @property
    def summary(self) -> str:
        """One line for an operator, e.g. ``200 after 7 probes in 1.4s``."""
        count = len(self.probes)
        probes = f"{count} probe{'' if count == 1 else 's'}"
        if self.ok:
            return f"{self.expected_code} after {probes} in {self.elapsed:.1f}s"
        last = self.last
        said = f"last probe {last.outcome}" if last else "no probe was made"
        return (
            f"timed out after {self.limit:g}s: {said} "
            f"(expected {self.expected_code}, {probes} in {self.elapsed:.1f}s)"
        )


def _describe(exc: Exception, timeout: float) -> str:
    if isinstance(exc, httpx.ConnectTimeout):
        return f"no connection within {timeout:.2g}s"
    if isinstance(exc, httpx.TimeoutException):
        return f"no response within {timeout:.2g}s"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


class _Prober:
    """A single httpx client probing one endpoint until a deadline."""

    def __init__(self, endpoint: str, limit: float, floor: float, request_timeout: float):
        self.endpoint = endpoint
        self.floor = floor
        self.request_timeout = request_timeout
        self.started = time.monotonic()
        self.deadline = self.started + limit
        self.probes: list[Probe] = []
        self.client = httpx.Client(
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    def __enter__(self) -> _Prober:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.client.close()

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def probe(self) -> Probe:
        timeout = min(self.request_timeout, max(self.remaining(), self.floor))
        at = datetime.now(UTC).isoformat(timespec="milliseconds")
        began = time.monotonic()
        status: int | None = None
        error: str | None = None
        try:
            with self.client.stream("GET", self.endpoint, timeout=timeout) as response:
                status = response.status_code
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            error = _describe(exc, timeout)
        probe = Probe(
            at=at, status=status, error=error, latency_ms=(time.monotonic() - began) * 1000
        )
        self.probes.append(probe)
        return probe


def wait_healthy(
    endpoint: str,
    expected_code: int,
    timeout: float,
    interval: float = DEFAULT_INTERVAL,
    *,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
) -> HealthResult:
    """Probe every ``interval`` seconds until ``expected_code`` or ``timeout`` passes.

    Probes start ``interval`` apart (sooner ones wait, slow ones are followed at
    once); the last one may start at the deadline and is given one interval.
    """
    with _Prober(endpoint, timeout, interval, request_timeout) as prober:
        while True:
            began = time.monotonic()
            if prober.probe().status == expected_code:
                return HealthResult(True, expected_code, timeout, prober.elapsed(), prober.probes)
            if prober.remaining() <= 0:
                return HealthResult(False, expected_code, timeout, prober.elapsed(), prober.probes)
            pause = interval - (time.monotonic() - began)
            time.sleep(max(0.0, min(pause, prober.remaining())))


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
    """Retry with exponential backoff until ``expected_code`` or ``budget`` seconds pass.

    Pauses follow ``backoff_delays``; the time a probe takes counts against the
    budget; the last pause is cut so the final attempt starts at the budget.
    """
    delays = backoff_delays(first_delay, factor, max_delay)
    with _Prober(endpoint, budget, first_delay, request_timeout) as prober:
        for delay in delays:
            if prober.probe().status == expected_code:
                return HealthResult(True, expected_code, budget, prober.elapsed(), prober.probes)
            if prober.remaining() <= 0:
                break
            time.sleep(min(delay, prober.remaining()))
        return HealthResult(False, expected_code, budget, prober.elapsed(), prober.probes)
