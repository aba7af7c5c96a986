"""Health probes: the backoff schedule as pure logic, the polling against real servers."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import islice, pairwise

import pytest

from release_phases.health import (
    HealthResult,
    Probe,
    backoff_delays,
    backoff_schedule,
    check_with_backoff,
    wait_healthy,
)
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
