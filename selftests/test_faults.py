"""Faults injected for real, each ending well: the release stops, says what happened
and what it left untouched, and the next command it names works once the fault is gone.

Every fault here is the real thing: Docker reached through a socket that dies, an
origin that is not there, a tmpfs that fills up, an endpoint that never answers, a
script that never ends. Each test removes the fault, follows the printed next
command and checks that the release then completes.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import docker
import pytest

from release_phases import atomic
from selftests.support import engine
from selftests.support.deployrepo import DeployRepo, Service
from selftests.support.scenario import container, running_on_prod, v1_running_v2_merged

pytestmark = pytest.mark.docker


def next_command(run: engine.Run) -> str:
    """The `next:` line of the run's summary."""
    found = re.findall(r"^next: (.*)$", run.output, re.MULTILINE)
    assert found, run
    return found[-1]


#: A pytest command in a next line; the ledger ends one with `;` or three spaces.
PYTEST_COMMAND = re.compile(r"pytest -m (\S+) --ticket (\S+)((?: [^\s;]+)*?)(?=;|   |$)")


def follow(run: engine.Run, line: str, *, which: int = 0, **kw: Any) -> engine.Run:
    """Run the ``which``-th pytest command of a next line, exactly as it is printed."""
    commands = PYTEST_COMMAND.findall(line)
    assert len(commands) > which, line
    mode, ticket, rest = commands[which]
    assert ticket == run.ticket, line
    return engine.run(run.repo, ticket, *rest.split(), mode=mode, **kw)


def head(deploy: DeployRepo) -> str:
    return deploy.prod_repo.head.commit.hexsha


class Background:
    """A release run in a thread, while the test injects its fault."""

    def __init__(self, repo: Path, ticket: str, **kw: Any) -> None:
        self.ran: list[engine.Run] = []
        self.thread = threading.Thread(
            target=lambda: self.ran.append(engine.run(repo, ticket, **kw)), daemon=True
        )
        self.thread.start()

    def wait_until(self, ready: Callable[[], bool], within: float = 120) -> None:
        """Until ``ready()`` says the run reached the point of the fault."""
        deadline = time.monotonic() + within
        while not ready():
            assert self.thread.is_alive(), self.ran
            assert time.monotonic() < deadline, "the run never got there"
            time.sleep(0.05)

    def result(self) -> engine.Run:
        self.thread.join(timeout=300)
        assert self.ran, "the run did not end"
        return self.ran[0]


# -- the workspace's disk fills up during a backup ---------------------------------------


@contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A small tmpfs mounted at ``where`` (created), unmounted whatever happens."""
    atomic.private_dir(where)  # as the engine would have made it
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:  # mounting needs root (CAP_SYS_ADMIN)
        why = f"cannot mount a tmpfs: {mounted.stderr.strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"under CI=true: {why}", pytrace=False)
        pytest.skip(why)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True)


def fill_volume(client: docker.DockerClient, svc: Service, directory: str, megabytes: int) -> None:
    """Write ``megabytes`` of random bytes into the service's container at ``directory``."""
    data = os.urandom(megabytes * 1024 * 1024)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("big.bin")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    assert container(client, svc).put_archive(directory, buf.getvalue())


def needs(run: engine.Run) -> str:
    """The amount the message says the backup needs more than."""
    found = re.search(r"the backup needs more than ([0-9.]+ [KMG]?i?B)", run.output)
    assert found, run
    return found[1]


#: A dump of the same data: its stdout goes through `compose exec` into the file.
DUMP = {"command": ["cat", "/data/data/big.bin"], "restore": ["sh", "-c", "cat > /tmp/restored"]}


@pytest.mark.reliability("fault", "the workspace's disk fills up during a backup")
@pytest.mark.parametrize("kind", ["volume", "dump"])
def test_a_full_disk_during_a_backup_stops_prepare_at_once_and_keeps_nothing_half_written(
    deploy, make_service, docker_client, kind
):
    declared = {"volumes": ["data"]} if kind == "volume" else {"dump": DUMP}
    services = v1_running_v2_merged(
        deploy, make_service, ("web",), volumes=("data",), backup=declared
    )
    fill_volume(docker_client, services["web"], "/data/data", 6)
    backups = deploy.prod / ".asd/workspace/backups"
    with tmpfs(backups, "2m"):
        run = engine.run(deploy.prod, "1234", timeout=300)
        assert run.rc == 1, run
        failed = run.event("prepare", "failed")
        assert failed["step"] == "test_backup" and failed["service"] == "web", failed
        # Fast: the write's own error, not a Docker API call timing out.
        assert int(failed["duration"].rstrip("s")) < 30, failed
        assert "no space left on device" in run.output.lower(), run
        assert str(backups / "web") in run.output, run
        # What reached the 2 MiB filesystem before it filled, counted from the file.
        written = re.search(r"it filled after ([0-9.]+) MiB had been written", run.output)
        assert written and 1.0 <= float(written[1]) <= 2.0, run
        assert run.state.backups == {}, "no half-written backup is named"
        pulled = (run.state.base_sha, run.state.merge_sha)
        assert all(pulled), run.state
        assert not any((backups / "web").iterdir()), "the partial directory was removed"
        command = next_command(run)
        assert command.startswith(f"make more than {needs(run)} free"), command
        assert f"df -h {backups / 'web'}" in command, command
    # The space is freed (the tmpfs is gone); the command it named goes on.
    again = follow(run, command)
    assert again.rc == 0, again
    assert (again.state.phase, again.state.phase_status) == ("verify", "done"), again
    # The same release went on: its prepare again from the same BASE_SHA, to the same merge.
    assert (again.state.base_sha, again.state.merge_sha) == pulled
    stamp = again.state.backups["web"]
    assert (backups / "web" / stamp / "record.json").is_file()


# -- servers the faults are made with ---------------------------------------------------


class Silent:
    """A TCP server that accepts every connection and says nothing, until `answer`."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.1)
        self.port = self.server.getsockname()[1]
        self.held: list[socket.socket] = []
        self.answers = threading.Event()
        self.closed = threading.Event()
        threading.Thread(target=self._serve, name="silent-endpoint", daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/health"

    def _serve(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.answers.is_set():
                with conn, contextlib.suppress(OSError):
                    conn.recv(65536)
                    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
            else:
                self.held.append(conn)  # accepted, never read, never answered

    def answer(self) -> None:
        self.answers.set()

    def close(self) -> None:
        self.closed.set()
        self.server.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def silent() -> Iterator[Silent]:
    server = Silent()
    yield server
    server.close()


class SocketProxy:
    """A unix socket of its own forwarding every connection to the real Docker socket,
    until `close` takes it away (the socket file too): Docker gone, mid-run."""

    def __init__(self, target: str = "/var/run/docker.sock") -> None:
        # A short directory of its own: a unix socket's path must fit in 108 bytes.
        self.path = Path(tempfile.mkdtemp(prefix="rp-proxy-")) / "docker.sock"
        self.target = target
        self.closed = threading.Event()
        self.open: list[socket.socket] = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(self.path))
        self.server.listen(64)
        self.server.settimeout(0.1)  # so the accept loop sees `closed`
        threading.Thread(target=self._serve, name="docker-proxy", daemon=True).start()

    @property
    def docker_host(self) -> str:
        return f"unix://{self.path}"

    def _serve(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.target)
            self.open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        """The engine is gone: no new connection, and every open one cut."""
        self.closed.set()
        self.server.close()
        self.path.unlink(missing_ok=True)
        self.path.parent.rmdir()
        for sock in self.open:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


# -- the Docker Engine cannot be reached -------------------------------------------------


@pytest.mark.reliability("fault", "the Docker Engine is unreachable when the release starts")
def test_docker_unreachable_before_the_run_changes_nothing(deploy, make_service, docker_client):
    services = v1_running_v2_merged(deploy, make_service, ("api",))
    before = (head(deploy), container(docker_client, services["api"]).id)
    dead = f"unix://{deploy.root / 'nothing.sock'}"
    run = engine.run(deploy.prod, "1234", env={"DOCKER_HOST": dead})
    assert run.rc == 1, run
    failed = run.event("prepare", "failed")
    assert failed["step"] == "test_preflight", failed
    assert "the Docker Engine is not reachable" in run.output, run
    assert dead in run.output, "names where it looked"
    assert "nothing was pulled, backed up or restarted" in run.output, run
    assert (head(deploy), container(docker_client, services["api"]).id) == before
    assert run.state.backups == {} and not run.state.merge_sha

    again = follow(run, next_command(run))  # Docker reachable again
    assert again.rc == 0, again
    assert (again.state.phase, again.state.phase_status) == ("verify", "done"), again


#: Waits in migrate, before the recreate, until the test has taken Docker away.
HOLD_HOOK = """\
touch .asd/in-pre-start
while [ -e .asd/hold ] && [ ! -e .asd/docker-gone ]; do sleep 0.1; done
"""


@pytest.mark.reliability("fault", "the Docker Engine goes away in the middle of migrate")
def test_docker_gone_in_the_middle_of_migrate_stops_it_and_from_migrate_goes_on(
    deploy, make_service, docker_client
):
    services = v1_running_v2_merged(
        deploy, make_service, ("api",), files={"packages/api/pre_start_init.sh": HOLD_HOOK}
    )
    (deploy.prod / ".asd").mkdir()
    (deploy.prod / ".asd" / "hold").write_text("")
    before = container(docker_client, services["api"]).id
    proxy = SocketProxy()
    release = Background(deploy.prod, "1234", env={"DOCKER_HOST": proxy.docker_host})
    try:
        release.wait_until((deploy.prod / ".asd" / "in-pre-start").exists)
    finally:
        proxy.close()
        (deploy.prod / ".asd" / "docker-gone").write_text("")
    run = release.result()
    assert run.rc == 1, run
    failed = run.event("migrate", "failed")
    assert (failed["service"], failed["step"]) == ("api", "compose-up"), failed
    assert "the Docker Engine stopped answering during `compose up` of api" in run.output, run
    assert proxy.docker_host in run.output, "names where it looked"
    assert "whether api's containers were recreated is unknown" in run.output, run
    assert run.state.done("prepare") and "api" in run.state.backups
    assert container(docker_client, services["api"]).id == before, "api was not recreated"

    (deploy.prod / ".asd" / "hold").unlink()
    command = next_command(run)
    assert "--from=migrate" in command and "pytest -m revert --ticket 1234" in command
    again = follow(run, command)  # Docker is back: the proxy's socket is not used any more
    assert again.rc == 0, again
    assert (again.state.phase, again.state.phase_status) == ("verify", "done"), again
    assert container(docker_client, services["api"]).image.tags == [services["api"].image]


@pytest.mark.reliability("fault", "the Docker Engine goes away while migrate waits for health")
def test_docker_gone_during_the_health_wait_is_said_as_such(
    deploy, make_service, docker_client, silent
):
    api = running_on_prod(deploy, make_service, ("api",))["api"]
    api.tag = "2"
    make_service("api", "2")
    # The first probe reaching this endpoint says migrate is waiting for health.
    api.health = {"endpoint": silent.endpoint, "expected_code": 200, "timeout": 60}
    deploy.write_service(api)
    deploy.merge_feature("feature/1234", "ticket 1234: api to tag 2, health elsewhere")
    proxy = SocketProxy()
    release = Background(deploy.prod, "1234", env={"DOCKER_HOST": proxy.docker_host})
    try:
        release.wait_until(lambda: bool(silent.held))
    finally:
        proxy.close()
    run = release.result()
    assert run.rc == 1, run
    failed = run.event("migrate", "failed")
    assert (failed["service"], failed["step"]) == ("api", "health"), failed
    # Not "the container is gone", and not after the 60 s health timeout.
    assert "the Docker Engine did not answer" in run.output, run
    assert "is gone" not in run.output, run
    assert int(failed["duration"].rstrip("s")) < 30, failed
    assert "api was recreated, its health is not known" in run.output, run

    silent.answer()
    again = follow(run, next_command(run))  # the engine answers again, the endpoint too
    assert again.rc == 0, again
    assert (again.state.phase, again.state.phase_status) == ("verify", "done"), again


# -- origin cannot be reached, or refuses ------------------------------------------------


@pytest.mark.reliability("fault", "origin is missing or refuses the fetch")
@pytest.mark.parametrize("fault", ["missing", "refusing"])
def test_an_origin_that_cannot_be_fetched_refuses_the_release_before_anything_changes(
    deploy, make_service, docker_client, fault
):
    services = v1_running_v2_merged(deploy, make_service, ("api",))
    prod = deploy.prod_repo
    url = prod.git.remote("get-url", "origin")
    if fault == "missing":
        gone = f"file://{deploy.root / 'moved-away.git'}"
        prod.git.remote("set-url", "origin", gone)
        says = "moved-away.git"
    else:
        # The serving side refuses, as a server denying access would.
        prod.git.config("remote.origin.uploadpack", "echo 'access denied by policy' >&2; false")
        says = "access denied by policy"
    before = (head(deploy), container(docker_client, services["api"]).id)
    run = engine.run(deploy.prod, "1234")
    assert run.rc == 1, run
    failed = run.event("prepare", "failed")
    assert failed["step"] == "test_preflight", failed
    assert f"origin ({prod.git.remote('get-url', 'origin')}) is not reachable" in run.output, run
    assert says in run.output, run
    assert "nothing was pulled, backed up or restarted" in run.output, run
    assert (head(deploy), container(docker_client, services["api"]).id) == before
    assert not (deploy.prod / ".asd/workspace/backups").exists()

    if fault == "missing":
        prod.git.remote("set-url", "origin", url)
    else:
        prod.git.config("--unset", "remote.origin.uploadpack")
    again = follow(run, next_command(run))
    assert again.rc == 0, again
    assert (again.state.phase, again.state.phase_status) == ("verify", "done"), again


# -- a health endpoint that accepts the connection and never answers ---------------------


@pytest.mark.reliability("fault", "a health endpoint that accepts and never answers")
@pytest.mark.parametrize("then", ["resume", "revert"])
def test_an_endpoint_that_never_answers_ends_migrate_at_the_health_timeout(
    deploy, make_service, docker_client, silent, then
):
    api = running_on_prod(deploy, make_service, ("api",))["api"]
    api.tag = "2"
    make_service("api", "2")
    api.health = {"endpoint": silent.endpoint, "expected_code": 200, "timeout": 8}
    deploy.write_service(api)
    deploy.merge_feature("feature/1234", "ticket 1234: api to tag 2, health elsewhere")
    started = time.monotonic()
    run = engine.run(deploy.prod, "1234")
    assert run.rc == 1, run
    failed = run.event("migrate", "failed")
    assert (failed["service"], failed["step"]) == ("api", "health"), failed
    assert silent.held, "the endpoint accepted the probes' connections"
    assert silent.endpoint in run.output, run
    assert "timed out after 8s" in run.output, run
    probe = r"no response within \d+s \(the probe's timeout\) on an accepted connection"
    assert re.search(probe, run.output), run
    # The wait ends at the manifest's timeout, not a probe's or a hang's later.
    assert int(failed["duration"].rstrip("s")) < 8 + 15, failed
    assert time.monotonic() - started < 120

    command = next_command(run)
    if then == "resume":
        silent.answer()  # the fault is gone: the endpoint answers now
        again = follow(run, command)
        assert again.rc == 0, again
        assert (again.state.phase, again.state.phase_status) == ("verify", "done"), again
    else:
        again = follow(run, command, which=1)  # the revert, with the endpoint still silent
        assert again.rc == 0, again
        assert (again.state.phase, again.state.phase_status) == ("revert", "done"), again
        assert container(docker_client, api).image.tags == [f"{api.repository}:1"]


# -- a ticket script or a hook that hangs ------------------------------------------------


def hanging_script(marker: str) -> str:
    """Starts a child named ``marker`` and waits for it, while .asd/hang exists."""
    return f"""\
echo started
if [ -e .asd/hang ]; then
    bash -c 'exec -a {marker} sleep 300' &
    wait
fi
echo done
"""


def running(marker: str) -> list[str]:
    found = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
    return found.stdout.split()


#: Where each kind of script lives, the phase it fails, and what it says it left standing.
HANGS = {
    "ticket script": (
        "releases/1234-hang.sh",
        "ticket",
        "releases/1234-hang.sh",
        "the services: migrate is done",
    ),
    "pre_start_init hook": (
        "packages/api/pre_start_init.sh",
        "migrate",
        "pre_start_init",
        "api: not recreated, its old containers still run",
    ),
}


@pytest.mark.reliability("fault", "a script that hangs: killed at its timeout with its children")
@pytest.mark.parametrize("kind", list(HANGS))
def test_a_hanging_script_is_killed_at_its_timeout_with_its_children(
    deploy, make_service, docker_client, kind
):
    path, phase, step, standing = HANGS[kind]
    marker = f"rp-fault-hang-{uuid.uuid4().hex[:12]}"
    services = v1_running_v2_merged(
        deploy, make_service, ("api",), files={path: hanging_script(marker)}
    )
    before = container(docker_client, services["api"]).id
    (deploy.prod / ".asd").mkdir()
    (deploy.prod / ".asd" / "hang").write_text("")
    try:
        run = engine.run(deploy.prod, "1234", "-o", "release_script_timeout=3")
        assert run.rc != 0, run
        failed = run.event(phase, "failed")
        assert failed["step"] == step, failed
        assert (
            f"{path} timed out after 3s and was killed, every process of its group with it"
            in run.output
        ), run
        assert f"Left untouched: {standing}" in run.output, run
        assert int(failed["duration"].rstrip("s")) < 3 + 10, failed
        assert not running(marker), "the script's child was killed with it"
    finally:
        for pid in running(marker):  # only if the assertion above failed
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
    if phase == "migrate":
        assert container(docker_client, services["api"]).id == before, "api was not recreated"

    (deploy.prod / ".asd" / "hang").unlink()
    command = next_command(run)
    assert f"--from={phase}" in command, command
    again = follow(run, command)
    assert again.rc == 0, again
    assert (again.state.phase, again.state.phase_status) == ("verify", "done"), again
