"""Benchmark 3: from the moment a service first answers its expected status to the
moment the engine's health wait (the same `health.poll` migrate uses) calls it healthy.

A local HTTP server answers 503 until a random moment, then 200; the latency is the
time from that moment to the wait's return. Reported: median and worst of N waits.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from release_phases.health import HttpCheck, poll


class _Flipping(BaseHTTPRequestHandler):
    ready_at = float("inf")

    def do_GET(self) -> None:
        self.send_response(200 if time.monotonic() >= self.ready_at else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def measure(waits: int) -> dict[str, float]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flipping)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}/health"
    latencies = []
    try:
        for _ in range(waits):
            check = HttpCheck(endpoint, 200)
            _Flipping.ready_at = time.monotonic() + random.uniform(0.3, 1.0)
            result = poll([check], timeout=10)
            done = time.monotonic()
            check.close()
            assert result.ok, result.summary
            latencies.append(done - _Flipping.ready_at)
    finally:
        server.shutdown()
    return {
        "median_ms": statistics.median(latencies) * 1000,
        "max_ms": max(latencies) * 1000,
    }
