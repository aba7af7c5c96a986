"""Health probes: the backoff schedule as pure logic, the polling against real servers."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import islice, pairwise

import pytest

from release_phases.health import (
    Folded,
    HealthResult,
    Probe,
    backoff_delays,
    backoff_schedule,
    check_with_backoff,
    fold,
    wait_healthy,
)
from release_phases.probing import probe_table
from selftests.support.deployrepo import free_port

# -- pure logic ------------------------------------------------------------------------------


def test_backoff_doubles_from_the_first_delay_up_to_the_cap() -> None:
    delays = list(islice(backoff_delays(0.2, 2.0, 5), 8))
    assert delays == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 5, 5, 5])


def test_backoff_schedule_lands_the_last_attempt_on_the_budget() -> None:
    assert backoff_schedule(30) == pytest.approx(
        [0, 0.2, 0.6, 1.4, 3.0, 6.2, 11.2, 16.2, 21.2, 26.2, 30]
    )
    assert backoff_schedule(1.0, first_delay=0.1) == pytest.approx([0, 0.1, 0.3, 0.7, 1.0])
    assert backoff_schedule(0.1, first_delay=0.5) == pytest.approx([0, 0.1])
    assert backoff_schedule(2, first_delay=1, factor=1) == pytest.approx([0, 1, 2])


@pytest.mark.parametrize(("first", "factor", "cap"), [(0, 2, 5), (0.2, 0.5, 5), (1, 2, 0.5)])
def test_backoff_refuses_a_schedule_that_would_not_back_off(
    first: float, factor: float, cap: float
) -> None:
    with pytest.raises(ValueError, match="backoff needs"):
        next(backoff_delays(first, factor, cap))


def _probe(status: int | None, error: str | None = None) -> Probe:
    return Probe(at="2024-05-01T03:00:00.000+00:00", status=status, error=error, latency_ms=2.0)


def test_summaries_read_as_an_operator_needs_them() -> None:
    probes = [_probe(500)] * 6 + [_probe(200)]
    assert HealthResult(True, 200, 15, 1.43, probes).summary == "200 after 7 probes in 1.4s"
    failed = HealthResult(False, 200, 15, 15.1, [_probe(None, "refused"), _probe(500)])
    assert failed.summary.startswith("timed out after 15s: last probe got 500")
    assert failed.last == _probe(500)
    refused = HealthResult(False, 200, 2.5, 2.6, [_probe(None, "ConnectError: refused")])
    assert refused.summary.startswith("timed out after 2.5s: last probe failed: ConnectError")
    assert HealthResult(False, 200, 1, 1.0).last is None


def _at(seconds: float) -> str:
    return (datetime(2024, 5, 1, 3, tzinfo=UTC) + timedelta(seconds=seconds)).isoformat(
        timespec="milliseconds"
    )


def _answers(*said: tuple[float, int | None], kind: str = "endpoint") -> list[Probe]:
    """Probes at (seconds, status): an HTTP status, or None for a TCP refusal."""
    return [
        Probe(
            at=_at(t),
            status=code,
            kind=kind,
            target=f"{kind}-target",
            latency_ms=2.0 + i,
            passed=code == 200,
            said="" if kind == "endpoint" else "refused",
        )
        for i, (t, code) in enumerate(said)
    ]


def _shown(lines: list[Probe | Folded]) -> list[str]:
    return [line.outcome for line in lines]


def test_a_run_of_the_same_answer_is_folded_between_its_first_and_last_probe() -> None:
    probes = _answers(*((0.2 * i, 404) for i in range(36)), (7.2, 200))
    lines = fold(probes)
    assert _shown(lines) == ["got 404", "got 404 x34, 0.2 s apart", "got 404", "got 200"]
    first, folded, last, healthy = lines
    assert (first, last, healthy) == (probes[0], probes[35], probes[36]), "kept exact"
    assert isinstance(folded, Folded) and folded.latency_ms == (3.0, 36.0)


@pytest.mark.parametrize(
    ("statuses", "shown"),
    [
        ([500, 500, 500], ["got 500"] * 3),  # nothing gained by folding one
        ([500, 500], ["got 500"] * 2),
        ([], []),
        (
            [500, 500, 500, 500, 502, 500, 500, 500, 500, 500],
            [
                "got 500",
                "got 500 x2, 0.15 s apart",
                "got 500",
                "got 502",
                "got 500",
                "got 500 x3, 0.15 s apart",
                "got 500",
            ],
        ),
    ],
)
def test_only_a_run_longer_than_three_is_folded(statuses, shown) -> None:
    probes = _answers(*((0.15 * i, code) for i, code in enumerate(statuses)))
    assert _shown(fold(probes)) == shown


def test_checks_probed_in_turn_are_folded_each_on_its_own_in_probe_order() -> None:
    http = _answers(*((0.3 * i, 503) for i in range(6)))
    tcp = _answers(*((0.3 * i + 0.1, None) for i in range(6)), kind="tcp")
    rounds = [probe for pair in zip(http, tcp, strict=True) for probe in pair]
    lines = fold(rounds)
    assert _shown(lines) == [
        "got 503",
        "refused",
        "got 503 x4, 0.3 s apart",
        "refused x4, 0.3 s apart",
        "got 503",
        "refused",
    ]


def test_the_probe_table_shows_a_folded_run_on_one_line() -> None:
    probes = _answers(*((0.2 * i, 404) for i in range(36)))
    table = probe_table(HealthResult(False, 200, 7, 7.0, probes)).splitlines()
    assert len(table) == 1 + 3 + 1, table  # header, first, folded, last, summary
    assert table[1].startswith(_at(0)) and table[3].startswith(_at(7))
    assert re.fullmatch(r"\s+\.\.\.\s+got 404 x34, 0\.2 s apart\s+3-36 ms", table[2]), table[2]
    assert table[4].startswith("timed out after 7s: last probe got 404")


# -- real servers ----------------------------------------------------------------------------


class _Scripted(BaseHTTPRequestHandler):
    """Answers with the server's next scripted status, then its last one forever."""

    def do_GET(self) -> None:
        server = self.server
        with server.lock:  # type: ignore[attr-defined]
            script = server.script  # type: ignore[attr-defined]
            status = script.pop(0) if len(script) > 1 else script[0]
        self.send_response(status)
        if status in (301, 302):
            self.send_header("Location", "/elsewhere")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator:
    """Start a server answering ``statuses`` in turn; yields a factory returning its URL."""
    servers: list[ThreadingHTTPServer] = []

    def start(*statuses: int) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
        server.daemon_threads = True
        server.script = list(statuses)  # type: ignore[attr-defined]
        server.lock = threading.Lock()  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/health"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def hung_endpoint() -> Iterator[str]:
    """Accepts connections and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/health"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


@pytest.fixture
def closed_endpoint() -> str:
    return f"http://127.0.0.1:{free_port()}/health"


def _timed(call, *args, **kwargs) -> tuple[HealthResult, float]:
    began = time.monotonic()
    result = call(*args, **kwargs)
    return result, time.monotonic() - began


def _gaps(result: HealthResult) -> list[float]:
    """Seconds between the starts of successive probes."""
    stamps = [datetime.fromisoformat(p.at) for p in result.probes]
    return [(b - a).total_seconds() for a, b in pairwise(stamps)]


def test_wait_healthy_polls_through_errors_until_the_expected_code(http_server) -> None:
    url = http_server(500, 500, 500, 200)
    result, took = _timed(wait_healthy, url, 200, timeout=5, interval=0.1)
    assert result.ok
    assert [p.status for p in result.probes] == [500, 500, 500, 200]
    assert all(p.error is None and p.latency_ms >= 0 for p in result.probes)
    assert result.summary.startswith("200 after 4 probes in ")
    assert 0.25 <= took < 2  # three pauses of an interval each


def test_probes_are_stamped_in_utc_an_interval_apart(http_server) -> None:
    result = wait_healthy(http_server(503, 503, 200), 200, timeout=5, interval=0.2)
    assert all(datetime.fromisoformat(p.at).utcoffset() == timedelta(0) for p in result.probes)
    assert all(0.15 <= gap < 1.0 for gap in _gaps(result))


def test_wait_healthy_times_out_on_the_wrong_code_and_says_what_it_got(http_server) -> None:
    result, took = _timed(wait_healthy, http_server(500), 200, timeout=1.0)
    assert not result.ok
    assert 1.0 <= took < 2.0
    assert len(result.probes) >= 4
    assert result.summary.startswith("timed out after 1s: last probe got 500")


def test_redirects_are_not_followed(http_server) -> None:
    url = http_server(302)
    assert wait_healthy(url, 302, timeout=2).ok
    result = wait_healthy(url, 200, timeout=0.5)
    assert not result.ok
    assert {p.status for p in result.probes} == {302}


def test_a_hung_endpoint_cannot_hold_the_wait_past_its_timeout(hung_endpoint) -> None:
    result, took = _timed(wait_healthy, hung_endpoint, 200, timeout=1.0)
    assert not result.ok
    assert took < 2.0
    assert result.probes and all(p.status is None for p in result.probes)
    assert "no response within" in result.last.error
    assert "timed out after 1s: last probe failed: no response" in result.summary


def test_a_closed_port_is_probed_until_the_timeout(closed_endpoint) -> None:
    result, took = _timed(wait_healthy, closed_endpoint, 200, timeout=0.6, interval=0.1)
    assert not result.ok
    assert 0.6 <= took < 1.5
    assert len(result.probes) >= 3
    assert all(p.status is None and p.error for p in result.probes)
    assert "ConnectError" in result.last.error


def test_backoff_retries_until_the_expected_code(http_server) -> None:
    url = http_server(500, 500, 500, 200)
    result, took = _timed(check_with_backoff, url, 200, budget=10, first_delay=0.1)
    assert result.ok
    assert [p.status for p in result.probes] == [500, 500, 500, 200]
    gaps = _gaps(result)
    assert gaps[0] >= 0.09 and gaps[1] >= 0.19 and gaps[2] >= 0.39  # doubling pauses
    assert took < 3


def test_backoff_gives_up_within_its_budget_recording_every_attempt(closed_endpoint) -> None:
    result, took = _timed(check_with_backoff, closed_endpoint, 200, budget=1.0, first_delay=0.1)
    assert not result.ok
    assert 1.0 <= took < 1.6
    planned = len(backoff_schedule(1.0, first_delay=0.1))
    assert planned - 1 <= len(result.probes) <= planned + 1
    assert result.summary.startswith("timed out after 1s: last probe failed")


def test_backoff_against_a_hung_endpoint_stays_within_budget(hung_endpoint) -> None:
    result, took = _timed(check_with_backoff, hung_endpoint, 200, budget=1.0, first_delay=0.1)
    assert not result.ok
    assert took < 2.0
    assert all("no response within" in p.error for p in result.probes)
