"""Where the run stands: its configuration in the header, long steps told as they go.

The formatting and the timing of the lines are pure and tested as such; a real
release whose health turns good only after some seconds shows them in its output,
which the selftests read from a pipe as a log file would hold it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from release_phases import progress
from release_phases.health import Probe
from release_phases.options import Options
from selftests.support import engine
from selftests.support.images import HTTP_PORT
from selftests.support.scenario import running_on_prod, v1_running_v2_merged

# -- pure logic ------------------------------------------------------------------------------


def test_a_line_is_due_every_period_and_never_twice_for_one_mark() -> None:
    every = progress.Every(seconds=5)
    due = [t for t in (0.2, 4.9, 5.0, 5.1, 9.8, 12.7, 14.9, 15.0, 31.0, 32.0) if every.due(t)]
    # A slow round that skips the 10 s mark is told once (12.7), then the next mark.
    assert due == [5.0, 12.7, 15.0, 31.0]


def test_a_line_is_due_sooner_when_enough_bytes_came() -> None:
    every = progress.Every(seconds=5, amount=100)
    seen = [
        (t, n)
        for t, n in ((0.1, 50), (0.2, 100), (0.3, 150), (0.4, 310), (5.1, 320))
        if every.due(t, n)
    ]
    assert seen == [(0.2, 100), (0.4, 310), (5.1, 320)]


def _probe(kind: str, target: str, *, status: int | None = None, said: str = "") -> Probe:
    return Probe(
        at="2026-05-01T03:00:00.000+00:00", status=status, kind=kind, target=target, said=said
    )


def test_a_waiting_line_gives_the_seconds_and_each_checks_last_answer() -> None:
    url = "http://127.0.0.1:8080/health"
    assert progress.waiting(5.04, [_probe("endpoint", url, status=503)]) == (
        f"waiting for health 5 s, {url} got 503"
    )
    both = [
        _probe("endpoint", url, status=404),
        _probe("tcp", "127.0.0.1:5432", said="refused: Connection refused"),
    ]
    assert progress.waiting(10.4, both) == (
        f"waiting for health 10 s, {url} got 404; tcp 127.0.0.1:5432 refused: Connection refused"
    )
    assert progress.waiting(5, []) == "waiting for health 5 s, no probe answered yet"


@pytest.mark.parametrize(
    ("count", "shown"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1536, "1.5 KiB"),
        (64 * 2**20, "64.0 MiB"),
        (3 * 2**30, "3.0 GiB"),
    ],
)
def test_sizes_read_as_an_operator_reads_them(count: int, shown: str) -> None:
    assert progress.size(count) == shown


def test_lines_go_nowhere_until_a_sink_is_installed_and_name_their_service() -> None:
    lines: list[str] = []
    progress.say("web", "not told")
    progress.install(lines.append)
    try:
        progress.say("web", "waiting for health 5 s")
        progress.say(None, "for the run")
    finally:
        progress.install(None)
    progress.say("web", "not told either")
    assert lines == ["web: waiting for health 5 s", "for the run"]


def test_a_meter_tells_bytes_as_they_come_and_the_total_only_after_a_long_one() -> None:
    lines: list[str] = []
    now = [0.0]
    progress.install(lines.append)
    try:
        quick = progress.Meter("api", "volume data", clock=lambda: now[0])
        quick.update(10)
        quick.end(10)  # small and quick: nothing to tell
        slow = progress.Meter("api", "volume data", clock=lambda: now[0])
        for seconds, total in ((1, 2**20), (2, 65 * 2**20), (6, 66 * 2**20), (7, 70 * 2**20)):
            now[0] = seconds
            slow.update(total)
        slow.end(70 * 2**20)
        dump = progress.Meter("db", "dump", verb="streamed", clock=lambda: now[0])
        dump.end(123, always=True)
    finally:
        progress.install(None)
    assert lines == [
        "api: volume data: 65.0 MiB archived so far",
        "api: volume data: 66.0 MiB archived so far",
        "api: volume data: 70.0 MiB archived in 7.0 s",
        "db: dump: 123 B streamed in 0.0 s",
    ]


def test_the_header_says_the_configuration_as_resolved() -> None:
    options = Options(
        ticket="1234",
        repo=Path("/srv/deploy"),
        from_phase="migrate",
        script_timeout=60,
        compose_timeout=600,
        stop_timeout=None,
        parallel=3,
        pull=False,
    )
    compose = "/usr/bin/docker compose (Compose 2.40.3)"
    assert progress.header(options, compose, 120.0) == [
        "release-phases: release from migrate of ticket 1234 in /srv/deploy, branch main",
        f"compose: {compose}",
        "timeouts: script 60 s, compose 600 s, stop Compose's rule (stop_grace_period, "
        "else 10 s), health 120 s unless the manifest says",
        "parallel: 3, pull missing images: no",
    ]


# -- a real release ---------------------------------------------------------------------------

#: The new version answers 404 for its first seconds (httpd serving a directory without
#: the health script), then 200: a service that takes a while to become healthy.
SLOW_START = (
    f"/bin/busybox httpd -f -p {HTTP_PORT} -h /data & sleep 6; kill $$!;"
    f" exec /bin/busybox httpd -f -p {HTTP_PORT} -h /www"
)
WAITING = re.compile(
    r"^(?P<service>api|web): waiting for health (?P<seconds>\d+) s,"
    r" http://127\.0\.0\.1:\d+/cgi-bin/health (got 404|failed: .+)$",
    re.MULTILINE,
)


def _slow_v2_merged(deploy, make_service, names: tuple[str, ...]) -> None:
    services = running_on_prod(deploy, make_service, names, timeout=60)
    for name, svc in services.items():
        make_service(name, "2")
        svc.tag = "2"
        svc.compose = {"command": ["/bin/busybox", "sh", "-c", SLOW_START]}
        deploy.write_service(svc)
    deploy.merge_feature("feature/1234", "ticket 1234: slow to start")


@pytest.mark.docker
def test_a_slow_health_wait_is_told_as_it_goes(deploy, make_service):
    _slow_v2_merged(deploy, make_service, ("api",))
    run = engine.run(deploy.prod, "1234")
    assert run.rc == 0, run
    out = run.output
    assert re.search(r"^release-phases: release of ticket 1234 in \S+, branch main$", out, re.M)
    assert re.search(r"^compose: \S+.* \(Compose \d+\.\d+", out, re.M), out
    assert "timeouts: script 1800 s, compose 600 s, stop 1 s, health 120 s" in out
    assert "parallel: 1, pull missing images: no" in out
    waits = list(WAITING.finditer(out))
    assert waits, out
    assert int(waits[0]["seconds"]) >= 5
    assert any("got 404" in w.group(0) for w in waits), out
    assert re.search(r"^api: healthy: 200 after \d+ probes in \d+\.\d+s$", out, re.M), out
    assert "\r" not in out, "whole lines, for a log file"


@pytest.mark.docker
def test_a_quiet_run_tells_no_progress(deploy, make_service):
    _slow_v2_merged(deploy, make_service, ("api",))
    run = engine.run(deploy.prod, "1234", "-q")
    assert run.rc == 0, run
    assert "waiting for health" not in run.output, run
    assert "healthy:" not in run.output


@pytest.mark.docker
def test_services_side_by_side_tell_whole_lines_each_with_its_name(deploy, make_service):
    _slow_v2_merged(deploy, make_service, ("api", "web"))
    run = engine.run(deploy.prod, "1234", "--parallel", "2")
    assert run.rc == 0, run
    assert "parallel: 2, pull missing images: no" in run.output
    told = {w["service"] for w in WAITING.finditer(run.output)}
    assert told == {"api", "web"}, run
    for line in run.output.splitlines():
        if "waiting for health" in line:
            assert WAITING.fullmatch(line), f"a cut or merged line: {line!r}"


@pytest.mark.docker
def test_a_ticket_scripts_output_shows_as_it_runs_in_a_passing_release(deploy, make_service):
    """pytest captures the engine's stderr; the script's lines reach the terminal anyway,
    line by line."""
    v1_running_v2_merged(
        deploy,
        make_service,
        ("api",),
        files={"releases/1234-hello.sh": "echo 'hello from the ticket script'\necho done\n"},
    )
    run = engine.run(deploy.prod, "1234")
    assert run.rc == 0, run
    lines = run.output.splitlines()
    assert "hello from the ticket script" in lines, run
    assert lines.index("hello from the ticket script") < lines.index("done"), run
