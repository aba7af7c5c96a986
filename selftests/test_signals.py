"""Ctrl-C and SIGTERM mid-release: the run stops at once, says so, and can go on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from selftests.support import engine
from selftests.support.scenario import v1_running_v2_merged

pytestmark = pytest.mark.docker

#: Hangs (with a grandchild of its own) while the flag file exists.
HANGING_SCRIPT = """\
echo started > .asd/ticket-started
if [ -e .asd/hang ]; then
    sleep 301 &
    wait
fi
echo done
"""


def _sleepers() -> list[str]:
    found = subprocess.run(["pgrep", "-f", "sleep 301"], capture_output=True, text=True)
    return found.stdout.split()


@pytest.mark.reliability(
    "signal",
    "a signal during a hanging ticket script: stop, log, save, unlock, end its processes",
)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_run_logs_it_and_kills_the_scripts_processes(
    deploy, make_service, signum
):
    v1_running_v2_merged(
        deploy, make_service, ("api",), files={"releases/1234-hang.sh": HANGING_SCRIPT}
    )
    (deploy.prod / ".asd").mkdir()
    (deploy.prod / ".asd" / "hang").write_text("")
    argv = [sys.executable, "-m", "pytest", "-m", "release", "--ticket", "1234", *engine.TEST_INI]
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    proc = subprocess.Popen(
        argv, cwd=deploy.prod, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while not (deploy.prod / ".asd" / "ticket-started").exists():
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "the ticket script never started"
            time.sleep(0.1)
        time.sleep(0.5)
        assert _sleepers(), "the script's grandchild is running"
        proc.send_signal(signum)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    name = signal.Signals(signum).name
    run = engine.Run(argv, proc.returncode, output, deploy.prod, "1234")
    assert run.rc != 0, run
    failed = run.event("ticket", "failed")
    assert (failed["step"], failed["rc"]) == (name, str(128 + signum)), failed
    assert (run.state.phase, run.state.phase_status) == ("ticket", "failed")
    assert run.state.done("migrate")
    assert (deploy.prod / ".asd/workspace/releases/.lock").read_text() == "", "lock let go"
    assert not _sleepers(), "the script's processes were killed, not orphaned"
    assert f"stopped by {name} during phase ticket" in run.output, run
    assert "--from=ticket" in run.output

    (deploy.prod / ".asd" / "hang").unlink()
    resumed = engine.run(deploy.prod, "1234", "--from=ticket")
    assert resumed.rc == 0, resumed
    assert (resumed.state.phase, resumed.state.phase_status) == ("verify", "done")
