"""The pytest plugin: options, the plan, and the classes that run a release.

`pytest_configure` resolves the options and the state file into one
`ReleaseContext` and registers the plugin classes only for a release run, so
plain `pytest` in any repository costs nothing:

- `Steps` provides the fixtures and parametrizes steps per planned service;
- `Selection` applies `--from` and a phase-aware `-k`, and checks that what the
  selected steps depend on is done (closing pytest-dependency's gaps, below);
- `Recorder` holds the lock, halts later steps after a failure, writes the state
  file and the log between steps, and prints the outcome with the next command.

pytest-dependency declares the phases' order of dependence (`depends` on the
previous phase, scope session). Its known gaps, closed here:
1. With `-k` or `--from`, a dependent whose dependency was deselected is merely
   skipped and the run exits 0. `Selection` turns that into a usage error unless
   the state file records the dependency's phase done, and then registers it as
   passed with pytest-dependency so the dependent runs.
2. Several tests sharing one dependency name (every step of a phase is named for
   its phase): the last result wins, so a later pass hides an earlier failure.
   `SharedNames` keeps a failure sticky for the name.
3. `-k` matches substrings of any name: see `selection.py`.
"""

from __future__ import annotations

import copy
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from pytest_dependency import DependencyItemStatus, DependencyManager

from release_phases import PHASES, clock, eventlog, lock, selection, state
from release_phases.context import Options, ReleaseContext, validate_ticket
from release_phases.errors import ConfigError, ReleaseError
from release_phases.plan import (
    finished,
    plan_fresh,
    plan_resume,
    plan_return,
    plan_revert,
    saved_if_any,
)
from release_phases.steps import Step
from release_phases.verify import ServiceUnderTest

MODES = ("release", "revert", "return_to_main")
PHASE_DIRS = {mode: f"phases/{mode}" for mode in MODES}
CONTEXT = pytest.StashKey[ReleaseContext]()
STEP = pytest.StashKey[Step]()
E2E_SERVICE = pytest.StashKey[str]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("release", "release-phases: release a ticket (pytest -m release)")
    group.addoption(
        "--ticket",
        help="the ticket to release or revert; required by -m release/revert "
        "(1-64 of A-Z a-z 0-9 . _ -)",
    )
    group.addoption("--branch", default="main", help="the branch to pull (default: main)")
    group.addoption(
        "--force-allow-non-main",
        action="store_true",
        help="allow --branch other than main (a hotfix release)",
    )
    group.addoption(
        "--from",
        dest="from_phase",
        choices=PHASES[1:],
        help="resume at this phase, using the state file's SERVICES and BACKUPS",
    )
    group.addoption(
        "--base-sha",
        help="the HEAD before the pull, when the worktree was pulled before the release "
        "(find it with `git reflog`)",
    )
    group.addoption("--repo", help="the deploy repository (default: the ini value, else cwd)")
    group.addoption(
        "--skip-git",
        action="store_true",
        help="revert: leave the code as it is (no git revert, no push), e.g. a hotfix branch",
    )
    group.addoption(
        "--skip-data",
        action="store_true",
        help="revert: do not restore the backups (only when the release did not touch data)",
    )
    parser.addini("release_repo", "the deploy repository, relative to the rootdir")
    parser.addini("container_prefix", "CONTAINER_PREFIX given to hooks and ticket scripts")
    parser.addini("release_script_timeout", "seconds a hook or ticket script may run (1800)")
    parser.addini(
        "release_stop_timeout", "seconds compose waits for a container to stop before killing (30)"
    )
    parser.addini("release_compose_timeout", "seconds one compose command may run (600)")
    parser.addini(
        "release_pull",
        "pull images missing on the host before recreating (true; false without a registry)",
        type="bool",
        default=True,
    )


def run_mode(config: pytest.Config) -> str | None:
    """`release`, `revert` or `return_to_main` when `-m` selects that marker alone."""
    markexpr = config.option.markexpr
    if not markexpr:
        return None
    expr = selection.compile_keyword(markexpr)
    if expr.evaluate(lambda _name, **_kw: False):
        return None  # the expression also selects unmarked tests: not a release run
    for mode in MODES:
        if expr.evaluate(lambda name, mode=mode, **_kw: name == mode):
            return mode
    return None


def _options(config: pytest.Config, mode: str) -> Options:
    given = config.getoption("ticket")
    if mode == "return_to_main" and given is None:
        given = "return-to-main"  # names its state file and log
    ticket = validate_ticket(given)
    if mode != "release" and config.getoption("from_phase"):
        raise ConfigError(f"--from is for -m release; a {mode} run always runs whole")
    repo_opt = config.getoption("repo") or config.getini("release_repo")
    repo = Path(config.rootpath, repo_opt) if repo_opt else Path.cwd()
    branch = config.getoption("branch")
    if branch != "main" and not config.getoption("force_allow_non_main"):
        raise ConfigError(
            f"--branch {branch} is not main: a release from another branch needs "
            "--force-allow-non-main",
            next_command=f"pytest -m release --ticket {ticket} --branch {branch} "
            "--force-allow-non-main",
        )
    script_timeout = _ini_number(config, "release_script_timeout", 1800)
    stop_timeout = int(_ini_number(config, "release_stop_timeout", 30))
    compose_timeout = _ini_number(config, "release_compose_timeout", 600)
    return Options(
        ticket=ticket,
        repo=repo.resolve(),
        branch=branch,
        force_allow_non_main=config.getoption("force_allow_non_main"),
        from_phase=config.getoption("from_phase"),
        base_sha=config.getoption("base_sha"),
        container_prefix=config.getini("container_prefix") or "",
        script_timeout=script_timeout,
        stop_timeout=stop_timeout,
        compose_timeout=compose_timeout,
        pull=config.getini("release_pull"),
        mode=mode,
        skip_git=config.getoption("skip_git"),
        skip_data=config.getoption("skip_data"),
    )


def _ini_number(config: pytest.Config, name: str, default: float) -> float:
    raw = config.getini(name) or str(default)
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"ini option {name} = {raw!r} is not a number") from None
    if value < 0:
        raise ConfigError(f"ini option {name} = {raw!r} must not be negative")
    return value


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    for mode in MODES:
        config.addinivalue_line("markers", f"{mode}: a step of release-phases' {mode} run")
    config.addinivalue_line("markers", "phase(name): the release phase a step belongs to")
    mode = run_mode(config)
    if mode is None:
        return
    try:
        ctx = ReleaseContext(_options(config, mode))
        keyword = config.option.keyword
        expr = selection.compile_keyword(keyword) if keyword else None
        if mode == "revert":
            ctx.plan = plan_revert(ctx)
        elif mode == "return_to_main":
            ctx.plan = plan_return(ctx)
        else:
            start = selection.start_phase(expr, ctx.options.from_phase)
            ctx.plan = plan_fresh(ctx) if start == "prepare" else plan_resume(ctx, start)
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[CONTEXT] = ctx
    # The directory, not its files: node ids then read `test_migrate.py::...`, and
    # pytest-order puts the modules in the release's order.
    config.args[:] = [str(Path(__file__).parent / PHASE_DIRS[mode])]
    config.args += [str(path) for path in ctx.plan.e2e_args]
    # Skip reasons ("release halted: migrate failed on web") belong in the summary.
    if "s" not in config.option.reportchars and "a" not in config.option.reportchars:
        config.option.reportchars += "s"
    if not config.option.collectonly and not config.getoption("htmlpath", None):
        config.option.htmlpath = str(ctx.reports_dir / f"{ctx.ticket}-{mode}-{clock.stamp()}.html")
        config.option.self_contained_html = True
    config.pluginmanager.register(Steps(ctx), "release-steps")
    config.pluginmanager.register(SharedNames(), "release-shared-names")
    if mode == "release":
        config.pluginmanager.register(Selection(ctx, expr), "release-selection")
    recorder = Recorder(ctx, config)
    config.pluginmanager.register(recorder, "release-recorder")
    if config.pluginmanager.hasplugin("html"):
        from release_phases.report import ReportDetails  # only with pytest-html

        config.pluginmanager.register(ReportDetails(recorder), "release-report")


def pytest_unconfigure(config: pytest.Config) -> None:
    ctx = config.stash.get(CONTEXT, None)
    if ctx is not None and ctx.plan is not None and ctx.plan.e2e_snapshot is not None:
        shutil.rmtree(ctx.plan.e2e_snapshot, ignore_errors=True)


@pytest.fixture(scope="session")
def release(request: pytest.FixtureRequest) -> ReleaseContext:
    """The release context of this run (only in a release run)."""
    return request.config.stash[CONTEXT]


@pytest.fixture
def step(request: pytest.FixtureRequest) -> Step:
    """What this step hands back to the plugin: facts, log fields, report details."""
    item = request.node
    record = Step(phase=phase_of(item) or "", name=item.name, service=service_of(item))
    item.stash[STEP] = record
    return record


@pytest.fixture
def e2e(request: pytest.FixtureRequest) -> ServiceUnderTest:
    """For a service's e2e tests: its manifest and its endpoint, as released."""
    service = request.node.stash.get(E2E_SERVICE, None)
    if service is None:
        raise pytest.UsageError("the e2e fixture is for tests under packages/<service>/e2e/")
    ctx = request.config.stash[CONTEXT]
    return ServiceUnderTest(service, ctx.manifest(service))


def phase_of(item: pytest.Item) -> str | None:
    marker = item.get_closest_marker("phase")
    return marker.args[0] if marker else None


def service_of(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    if callspec and "service" in callspec.params:
        return callspec.params["service"]
    return item.stash.get(E2E_SERVICE, None)


class Steps:
    """One step per planned service, for steps that take `service`."""

    def __init__(self, ctx: ReleaseContext) -> None:
        self.ctx = ctx

    def pytest_itemcollected(self, item: pytest.Item) -> None:
        """A service's e2e test becomes a verify step of that service."""
        for service, where in self.ctx.plan.e2e.items():
            if item.path.is_relative_to(where):
                item.stash[E2E_SERVICE] = service
                item.add_marker(pytest.mark.release)
                item.add_marker(pytest.mark.phase("verify"))
                item.add_marker(pytest.mark.order(5))  # after the image and health checks
                item.add_marker(
                    pytest.mark.dependency(name="verify", depends=["ticket"], scope="session")
                )

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "service" in metafunc.fixturenames:
            services = self.ctx.plan.services
            metafunc.parametrize("service", services or [None], ids=services or ["none"])


class Selection:
    """`--from`, a phase-aware `-k`, and what the selected steps depend on."""

    def __init__(self, ctx: ReleaseContext, expr) -> None:
        self.ctx = ctx
        self.expr = expr
        self.satisfied: list[str] = []

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(
        self, session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        start = self.ctx.plan.start_phase
        keep: list[pytest.Item] = []
        drop: list[pytest.Item] = []
        empty: list[pytest.Item] = []
        for item in items:
            phase = phase_of(item)
            if phase is None:
                keep.append(item)
                continue
            if "service" in getattr(item, "fixturenames", ()) and service_of(item) is None:
                empty.append(item)  # a per-service step, and no service changed
            elif PHASES.index(phase) < PHASES.index(start) or not self._keyword_allows(item):
                drop.append(item)
            else:
                keep.append(item)
        # -k has been applied here, phase-aware; pytest's substring matching must not
        # apply it again after us.
        config.option.keyword = ""
        self.totals = _count([i for i in items if i not in empty])
        if drop:
            config.hook.pytest_deselected(items=drop)
        if drop or empty:
            # A per-service step with no service is not a step at all: dropped quietly.
            items[:] = keep

    def _keyword_allows(self, item: pytest.Item) -> bool:
        if self.expr is None:
            return True
        phase = phase_of(item) or ""
        return selection.matches(self.expr, phase, lambda word: word in item.name)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        items = session.items
        selected = _count(items)
        done: set[str] = set()
        if self.ctx.plan.start_phase != "prepare" or any(not selected.get(p) for p in PHASES[:1]):
            try:
                saved = self.ctx.saved_state()
                done = {p for p in PHASES if saved.done(p)}
            except ConfigError:
                done = set()
        problem = selection.check_contiguous(selected, self.totals, done)
        if problem:
            raise pytest.UsageError(
                f"{problem} ({self.ctx.state_path}); nothing was run or changed.\n"
                f"Next: {self.ctx.options.command()}   (a full release)"
            )
        self.satisfied = [p for p in PHASES if p in done and not selected.get(p)]
        if items and self.satisfied:
            # Gap 1: tell pytest-dependency that phases done in an earlier run passed.
            manager = DependencyManager.getManager(items[0], scope="session")
            for phase in self.satisfied:
                status = DependencyItemStatus()
                status.results = dict.fromkeys(DependencyItemStatus.Phases, "passed")
                manager.results[phase] = status

    def pytest_report_collectionfinish(self, config: pytest.Config) -> list[str]:
        plan = self.ctx.plan
        lines = [f"release plan for ticket {self.ctx.ticket} in {self.ctx.repo}:"]
        lines += [f"  {line}" for line in plan.describe()]
        if self.satisfied:
            lines.append(f"  done in an earlier run: {' '.join(self.satisfied)}")
        return lines


def _count(items: list[pytest.Item]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        phase = phase_of(item)
        if phase:
            counts[phase] = counts.get(phase, 0) + 1
    return counts


@dataclass(frozen=True)
class Failure:
    rc: int
    service: str | None
    step: str | None
    message: str

    @classmethod
    def of(cls, exc: BaseException | None, service: str | None, item: pytest.Item, rep) -> Failure:
        if isinstance(exc, ReleaseError):
            return cls(exc.rc, service, exc.step or item.name.split("[")[0], str(exc))
        return cls(1, service, item.name.split("[")[0], str(exc) if exc else rep.longreprtext)


class SharedNames:
    """Gap 2 of pytest-dependency: a name shared by several tests keeps its first failure.

    pytest-dependency records one status per name and each test overwrites it,
    so `name="verify"` on four checks reads as passed when only the last passed.
    This runs after it has recorded a report (logreport follows makereport) and
    marks the name failed again in every scope's manager.
    """

    def __init__(self) -> None:
        self.items: dict[str, pytest.Item] = {}
        self.failed: set[str] = set()

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.items = {item.nodeid: item for item in session.items}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        item = self.items.get(report.nodeid)
        marker = item.get_closest_marker("dependency") if item else None
        name = marker.kwargs.get("name") if marker else None
        if not name:
            return
        if report.failed:
            self.failed.add(name)
        if name not in self.failed:
            return
        for scope in DependencyManager.ScopeCls:
            manager = DependencyManager.getManager(item, scope=scope)
            status = manager.results.get(name) if manager else None
            if status is not None:
                status.results["call"] = "failed"


FACT_FIELDS = {"BASE_SHA": "base_sha", "MERGE_SHA": "merge_sha", "BRANCH": "branch"}


class Recorder:
    """The lock, halting, the state file and the log: the only writer of the last two."""

    def __init__(self, ctx: ReleaseContext, config: pytest.Config) -> None:
        self.ctx = ctx
        self.config = config
        self.held: lock.Acquired | None = None
        self.open_phase: str | None = None
        self.phase_t0 = 0.0
        self.halted: str | None = None
        #: phase -> its first failure.
        self.failures: dict[str, Failure] = {}
        self.last_item: dict[str, str] = {}
        self.ran = 0
        self.replaces_release = False
        self.deselected: set[str] = set()
        self.entered: list[str] = []

    # -- collection ---------------------------------------------------------------------
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for item in session.items:
            phase = phase_of(item)
            if phase:
                self.last_item[phase] = item.nodeid

    # -- before each step ---------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        phase = phase_of(item)
        if phase is None:
            return
        if self.halted:
            pytest.skip(self.halted)
        if self.held is None:
            self._take_lock()
        if phase != self.open_phase:
            self._enter(phase)

    def _take_lock(self) -> None:
        try:
            self.held = lock.acquire(self.ctx.lock_path, self.ctx.ticket)
        except ReleaseError:
            self.halted = "release halted: the lock is held by another release"
            raise
        try:
            saved = saved_if_any(self.ctx)
        except ConfigError:
            # Unreadable: never overwrite what revert may need.
            self.halted = "release halted: the state file is unreadable"
            lock.release(self.held)
            self.held = None
            raise
        fresh = self.ctx.options.mode == "release" and self.ctx.plan.start_phase == "prepare"
        if saved is not None and fresh and finished(saved):
            # The ticket is released again after it completed or was reverted. Its old
            # record is copied aside, and its per-release keys stay until the new pull
            # succeeds (see _merge): a release that pulls nothing must not cost the
            # old one its revert.
            kept = self.ctx.state_path.with_name(f"{self.ctx.ticket}.env.{clock.stamp()}")
            shutil.copy2(self.ctx.state_path, kept)
            self.replaces_release = True
        if saved is None:
            saved = state.State(ticket=self.ctx.ticket, branch=self.ctx.options.branch)
        self.ctx.state = saved
        self.ctx.previous = copy.deepcopy(saved)
        if self.held.took_over:
            self._log(
                "prepare" if self.ctx.plan.start_phase == "prepare" else self.ctx.plan.start_phase,
                "lock",
                action="took-over-stale",
                holder=self.held.took_over.describe(),
            )

    def _enter(self, phase: str) -> None:
        if self.open_phase is not None:
            self._finish(self.open_phase)
        # A phase with no step in this run (no service changed) still happens, empty,
        # so the state file shows it done and `--from` a later phase works.
        phases = self.ctx.phases
        if self.entered:
            first = phases.index(self.entered[-1]) + 1
        else:
            first = phases.index(self.ctx.plan.start_phase)
        for empty in phases[first : phases.index(phase)]:
            self._begin(empty)
            self._finish(empty)
        self._begin(phase)

    def _begin(self, phase: str) -> None:
        self.ctx.state.begin(phase, clock.iso())
        self._save()
        fields: dict[str, str] = {}
        if phase == "migrate":
            fields["services"] = " ".join(self.ctx.state.services)
        elif phase == "ticket":
            fields["script"] = " ".join(self.ctx.plan.ticket_scripts) or "none"
        self._log(phase, "start", **fields)
        self.open_phase = phase
        self.entered.append(phase)
        self.phase_t0 = time.monotonic()

    def _finish(self, phase: str) -> None:
        failure = self.failures.get(phase)
        self.ctx.state.finish(phase, failure is None, clock.iso())
        self._save()
        duration = f"{round(time.monotonic() - self.phase_t0)}s"
        if failure is None:
            self._log(phase, "done", duration=duration)
        else:
            self._log(
                phase,
                "failed",
                rc=failure.rc,
                service=failure.service,
                step=failure.step,
                duration=duration,
            )
        self.open_phase = None

    # -- after each step ----------------------------------------------------------------
    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        outcome = yield
        rep = outcome.get_result()
        phase = phase_of(item)
        if phase is None:
            return
        exc = call.excinfo.value if call.excinfo else None
        if isinstance(exc, ReleaseError):
            rep.longrepr = str(exc)  # the operator's message, not a traceback
        if self.held is None or rep.skipped:
            return
        step = item.stash.get(STEP, None)
        if step is not None and rep.when == "call":
            self._merge(step, passed=rep.passed)
        if rep.failed:
            service = service_of(item)
            self.failures.setdefault(phase, Failure.of(exc, service, item, rep))
            if phase not in selection.COMPLETE_PICTURE:
                where = f" on {service}" if service else f" at {item.name}"
                self.halted = f"release halted: {phase} failed{where}"
                if self.open_phase == phase:
                    self._finish(phase)
        elif rep.when == "call":
            self.ran += 1
        last = rep.when == "teardown" and self.last_item.get(phase) == item.nodeid
        if last and self.open_phase == phase:
            self._finish(phase)

    def _merge(self, step: Step, passed: bool) -> None:
        st = self.ctx.state
        if self.replaces_release and "MERGE_SHA" in step.facts:
            st.services, st.backups, st.extra = [], {}, {}
            self.replaces_release = False
        for key, value in step.facts.items():
            if key == "SERVICES":
                st.services = value.split()
            elif key in FACT_FIELDS:
                setattr(st, FACT_FIELDS[key], value)
            else:
                st.extra[key] = value
        st.backups.update(step.backups)
        self._save()
        if passed:
            fields = {"step": step.name.split("[")[0], "service": step.service, **step.log_fields}
            self._log(step.phase, "step", **fields)

    # -- the end ------------------------------------------------------------------------
    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        self.deselected.update(p for p in map(phase_of, items) if p)

    def _complete_empty_tail(self) -> None:
        """Phases after the last one that ran, with no step at all (not deselected ones),
        happen empty: a ticket-script-only release still verifies nothing and completes."""
        phases = self.ctx.phases
        tail = phases[phases.index(self.entered[-1]) + 1 :]
        if any(p in self.deselected or p in self.last_item for p in tail):
            return
        if self.open_phase is not None:
            self._finish(self.open_phase)
        for phase in tail:
            self._begin(phase)
            self._finish(phase)

    @pytest.hookimpl(tryfirst=True)  # before pytest-html writes the report from our state
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.held is not None and self.entered and not self.failures and exitstatus == 0:
            self._complete_empty_tail()
        if self.held is not None:
            if self.open_phase is not None and self.open_phase in self.failures:
                self._finish(self.open_phase)
            lock.release(self.held)
        if self.ran == 0 and not self.config.option.collectonly and exitstatus == 0:
            session.exitstatus = pytest.ExitCode.NO_TESTS_COLLECTED

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if self.config.option.collectonly:
            return
        tr = terminalreporter
        tr.section("release-phases")
        for line in self.summary():
            tr.write_line(line)

    def summary(self) -> list[str]:
        ctx = self.ctx
        st = ctx.state
        lines = [f"ticket {ctx.ticket}: {self.outcome()}"]
        if st is not None:
            lines.append(f"state file: {ctx.state_path}  (PHASE={st.phase} {st.phase_status})")
            lines.append(f"log: {ctx.log_path}")
        if st is not None and st.extra.get("DRIFT"):
            lines.append(f"needs a release (differs from main): {st.extra['DRIFT']}")
        html = self.config.getoption("htmlpath", None)
        if html:
            lines.append(f"report: {html}")
        lines.append(f"next: {self.next_command()}")
        return lines

    def outcome(self) -> str:
        if self.held is None:
            return "NOT STARTED (" + (self.halted or "no release step ran") + ")"
        for phase in self.ctx.phases:
            if phase in self.failures:
                service = self.failures[phase].service
                return f"FAILED in {phase}" + (f" on {service}" if service else "")
        if self.ran == 0:
            return "NOTHING RAN"
        if self.entered and self.entered[-1] == self.ctx.phases[-1]:
            return "COMPLETE"
        last = self.entered
        return f"stopped after {last[-1] if last else '?'} (phases after it were not selected)"

    def next_command(self) -> str:
        opts = self.ctx.options
        revert = f"pytest -m revert --ticket {opts.ticket}"
        for phase in self.ctx.phases:
            if phase not in self.failures:
                continue
            if phase in ("prepare", "revert", "return_to_main"):
                message = self.failures[phase].message
                hint = message.split("Next: ", 1)[1].splitlines()[0] if "Next: " in message else ""
                # These phases can be run again as they are: the error's own hint is best.
                return hint or f"fix the cause above, then {opts.command()}"
            return f"fix the cause, then {opts.command(f'--from={phase}')}   or roll back: {revert}"
        if self.held is None:
            return f"see the error above, then {opts.command()}"
        drift = self.ctx.state.extra.get("DRIFT") if self.ctx.state else None
        if opts.mode == "return_to_main" and drift:
            since = self.ctx.state.extra.get("HOTFIX_SHA", "<hotfix sha>")
            return (
                f"release what main has beyond the hotfix ({drift}): "
                f"pytest -m release --ticket <id> --base-sha {since}"
            )
        if opts.mode != "release":
            return "nothing"
        return f"nothing; to roll back this release: {revert}"

    # -- writing --------------------------------------------------------------------------
    def _save(self) -> None:
        state.write(self.ctx.state_path, self.ctx.state)

    def _log(self, phase: str, event: str, **fields: object) -> None:
        line = eventlog.format_line(self.ctx.ticket, phase, event, **fields)
        eventlog.append(self.ctx.log_path, line)
