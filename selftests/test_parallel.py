"""--parallel N: services migrated side by side, each still its own step."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from selftests.support import engine
from selftests.support.scenario import v1_running_v2_merged


def _hook(record: str, name: str, seconds: int = 1) -> str:
    """A pre_start_init hook that notes when it ran, and takes `seconds`."""
    return (
        f'echo "start {name} $(date +%s.%N)" >> {record}\n'
        f"sleep {seconds}\n"
        f'echo "end {name} $(date +%s.%N)" >> {record}\n'
    )


def _spans(record) -> dict[str, tuple[float, float]]:
    marks: dict[str, dict[str, float]] = {}
    for line in record.read_text().splitlines():
        what, name, at = line.split()
        marks.setdefault(name, {})[what] = float(at)
    return {name: (m["start"], m["end"]) for name, m in marks.items()}


def test_services_migrate_side_by_side_and_after_waits(deploy, make_service, tmp_path):
    record = tmp_path / "hooks.log"
    names = ("a", "b", "c", "d")
    v1_running_v2_merged(
        deploy,
        make_service,
        names,
        files={f"packages/{n}/pre_start_init.sh": _hook(record, n) for n in names},
    )
    # d waits for a; with --parallel 3: a, b, c start together, d once a is healthy.
    deploy.write("packages/d/manifest.yaml", _with_after(deploy, "d", ["a"]))
    deploy.merge_feature("feature/77", "d after a")

    run = engine.run(deploy.prod, "1234", "--parallel", "3")
    assert run.rc == 0, run
    spans = _spans(record)
    assert set(spans) == set(names)
    (a0, a1), (b0, b1), (c0, c1), (d0, _) = (spans[n] for n in names)
    assert max(a0, b0, c0) < min(a1, b1, c1), f"a, b and c did not overlap: {spans}"
    assert d0 > a1, f"d started before a was done: {spans}"
    passed = [
        e["service"]
        for e in run.events
        if e["phase"] == "migrate" and e["event"] == "step" and e.get("service")
    ]
    assert sorted(passed) == sorted(names), run.log_path.read_text()
    assert run.state.phase == "verify" and run.state.phase_status == "done"


@pytest.mark.reliability("fault", "--parallel: one service fails while others are under way")
def test_a_failure_starts_nothing_more_and_the_rest_report(deploy, make_service, tmp_path):
    record = tmp_path / "hooks.log"
    names = ("a", "b", "c")
    services = v1_running_v2_merged(
        deploy,
        make_service,
        names,
        v2_health={"a": "error"},
        # b is still under way (8 s) when a's health wait gives up (3 s).
        files={
            "packages/b/pre_start_init.sh": _hook(record, "b", 8),
            "packages/c/pre_start_init.sh": _hook(record, "c"),
        },
        timeout=3,
    )
    assert services["a"].tag.startswith("2-")
    # c waits for b: with --parallel 2, a fails while b is under way; c never starts.
    deploy.write("packages/c/manifest.yaml", _with_after(deploy, "c", ["b"]))
    deploy.merge_feature("feature/78", "c after b")

    run = engine.run(deploy.prod, "1234", "--parallel", "2")
    assert run.rc != 0, run
    steps = {
        e["service"]: e["event"]
        for e in run.events
        if e["phase"] == "migrate" and e.get("service") and e["event"] in ("step", "failed")
    }
    assert steps == {"a": "failed", "b": "step"}, run.log_path.read_text()
    assert "c" not in _spans(record), "c started after a failed"
    assert "not started: the migrate of a failed" in run.output, run
    assert run.state.phase == "migrate" and run.state.phase_status == "failed"
    assert "--parallel 2" in run.output and "--from=migrate" in run.output, run


def _with_after(deploy, name: str, after: list[str]) -> str:
    text = (deploy.dev / "packages" / name / "manifest.yaml").read_text()
    return text + f"after: [{', '.join(after)}]\n"


@pytest.mark.reliability("bad input", "a --parallel that is no whole number from 1 to 32")
@pytest.mark.parametrize("value", ["0", "-1", "two", "33", "1.5"])
def test_a_parallel_that_is_no_count_is_refused(deploy, value):
    deploy.clone_prod()
    run = engine.run(deploy.prod, "1234", f"--parallel={value}")
    assert run.rc == 4, run
    assert f"--parallel {value!r} must be a whole number from 1 to 32" in run.output, run
    assert not (deploy.prod / ".asd").exists()


def test_a_parallel_revert_restores_every_service_in_reverse_after_order(
    deploy, make_service, docker_client
):
    """b and c come after a: the revert with --parallel 2 restores b and c side by side,
    then a; every service runs its old image again."""
    names = ("a", "b", "c")
    services = v1_running_v2_merged(deploy, make_service, names, volumes=("data",), ticket="88")
    for name in ("b", "c"):
        deploy.write(f"packages/{name}/manifest.yaml", _with_after(deploy, name, ["a"]))
    deploy.merge_feature("feature/88b", "b and c after a")
    run = engine.run(deploy.prod, "88", "--parallel", "2")
    assert run.rc == 0, run

    reverted = engine.run(deploy.prod, "88", "--parallel", "2", mode="revert")
    assert reverted.rc == 0, reverted
    started = {}
    for name, svc in services.items():
        (found,) = docker_client.containers.list(
            filters={"label": f"com.docker.compose.project={svc.project}"}
        )
        assert found.attrs["Config"]["Image"] == f"{svc.repository}:1", name
        started[name] = found.attrs["State"]["StartedAt"]
    assert started["a"] > max(started["b"], started["c"]), started


@pytest.mark.reliability("signal", "SIGTERM while --parallel services are under way")
def test_a_signal_ends_the_services_under_way_before_the_lock_is_let_go(
    deploy, make_service, tmp_path
):
    """Two hooks hang side by side; SIGTERM ends both at once (not at their timeout),
    and only then are the state written and the lock let go; --from=migrate goes on."""
    marker = f"sleep 3{tmp_path.name[-2:]}7"  # unique to this test: found with pgrep
    hang = f'[ -e "{tmp_path}/hang" ] && {marker}\ntrue\n'
    (tmp_path / "hang").write_text("")
    v1_running_v2_merged(
        deploy,
        make_service,
        ("a", "b"),
        files={f"packages/{n}/pre_start_init.sh": hang for n in ("a", "b")},
    )
    argv = [*engine.argv_of("1234"), "--parallel", "2"]
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    proc = subprocess.Popen(
        argv, cwd=deploy.prod, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while len(_pids(marker)) < 2:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "the two hooks never ran side by side"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    run = engine.Run(argv, proc.returncode, output, deploy.prod, "1234")
    assert run.rc != 0, run
    failed = run.event("migrate", "failed")
    assert (failed["step"], failed["rc"]) == ("SIGTERM", str(128 + signal.SIGTERM)), failed
    assert not _pids(marker), "a hook under way in a thread was left running"
    assert (run.state.phase, run.state.phase_status) == ("migrate", "failed"), run
    assert (deploy.prod / ".asd/workspace/releases/.lock").read_text() == "", "lock let go"

    (tmp_path / "hang").unlink()
    resumed = engine.run(deploy.prod, "1234", "--from=migrate", "--parallel", "2")
    assert resumed.rc == 0, resumed


def _pids(pattern: str) -> list[str]:
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return found.stdout.split()
