"""The pytest plugin: wires pytest to the release's context, ledger and journal.

`pytest_configure` resolves the options, the state file and the plan into one
`ReleaseContext`, whole before any step runs, and registers the classes below
only for a release run (`for_the_engine`): `-m release` with one of the engine's
options, or in a deploy repository. Anywhere else the plugin stays out, even of a
project's own `release` marker, and imports none of the machinery (Docker, git,
HTTP, pydantic): what this module imports (options, ledger, state, masking) needs
nothing beyond the standard library and pytest.

- `Steps` gives the fixtures and one step per planned service;
- `Halting` gives each step its pytest-dependency mark: a step depends on the
  step before it, a check on the last step before the checks. pytest-dependency
  skips what follows a failure; that is the only way a run halts;
- `Selection` applies `--from` and a phase-aware `-k`, and registers the steps
  an earlier run completed as passed, so that what the selection runs may start;
- `Record` tells the ledger what each step did and has the journal write it,
  then prints the ledger's summary;
- `Telling` prints the configuration in pytest's header and, while steps run,
  their progress (`progress.say`).

pytest-dependency's gaps, closed here and nowhere else:
1. With `-k` or `--from`, a dependent whose dependency was deselected is merely
   skipped and the run exits 0: `Selection` makes it a usage error unless the
   state file records the phase done, and then registers the steps as passed.
2. Its skip reason names a node id ("x depends on y"): `Record` words it for the
   operator as the failure that halted the run ("release halted: migrate failed
   on api"). It rewords a skip that pytest-dependency raised; it skips nothing.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from release_phases import PHASES, masking, selection
from release_phases.errors import ConfigError, ReleaseError
from release_phases.ledger import CHECK, ORDINARY, WAVE, Failure, Ledger, dependencies
from release_phases.options import (
    Options,
    typed_overrides,
    validate_branch,
    validate_sha,
    validate_ticket,
)
from release_phases.steps import STEP, Step

if TYPE_CHECKING:
    from _pytest.mark.expression import Expression
    from _pytest.terminal import TerminalReporter

    from release_phases.context import ReleaseContext
    from release_phases.journal import Journal
    from release_phases.ledger import Summary
    from release_phases.verify import ServiceUnderTest
    from release_phases.wave import Wave

MODES = ("release", "revert", "return_to_main")
PHASE_DIRS = {mode: f"phases/{mode}" for mode in MODES}
CONTEXT = pytest.StashKey["ReleaseContext"]()
E2E_SERVICE = pytest.StashKey[str]()
WAVE_RUNNING = pytest.StashKey["Wave"]()
#: What pytest-dependency's skip reason says: "<step> depends on <step>".
DEPENDS_ON = " depends on "
#: The most services `--parallel` migrates at once: each is a compose command and a
#: health wait in its own thread; beyond this the host, not the engine, is the limit.
MAX_PARALLEL = 32


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
        "--parallel",
        metavar="N",
        help="migrate up to N services at once, in the order after: allows "
        "(default: the ini value release_parallel, else 1)",
    )
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
        "release_stop_timeout",
        "seconds compose waits for a container to stop before killing it "
        "(default: the service's stop_grace_period, else Compose's default)",
    )
    parser.addini("release_compose_timeout", "seconds one compose command may run (600)")
    parser.addini("release_parallel", "services migrated at once (1); --parallel overrides it")
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
    if expr.evaluate(selection.only(None)):
        return None  # the expression also selects unmarked tests: not a release run
    return next((mode for mode in MODES if expr.evaluate(selection.only(mode))), None)


#: The engine's own options: any of them given makes `-m release` the engine's run.
ENGINE_OPTIONS = (
    "ticket",
    "repo",
    "from_phase",
    "base_sha",
    "parallel",
    "skip_git",
    "skip_data",
    "force_allow_non_main",
)


def for_the_engine(config: pytest.Config) -> bool:
    """Is this `-m release` (revert, return_to_main) run the engine's?

    Yes when one of the engine's options is given (`--ticket`, `--repo`, ...), when
    the ini file names a `release_repo`, or when the current directory, where the
    engine looks for the deploy repository, is one: it holds a
    `packages/<service>/manifest.yaml`. Otherwise the marker is the project's own,
    and its tests run as if the plugin were not installed.
    """
    # Given at all counts, an empty value too: `--ticket ''` is refused, not ignored.
    if any(config.getoption(name) not in (None, False) for name in ENGINE_OPTIONS):
        return True
    if config.getoption("branch") != "main" or config.getini("release_repo"):
        return True
    return is_deploy_repo(Path.cwd())


def is_deploy_repo(path: Path) -> bool:
    return any(path.glob("packages/*/manifest.yaml"))


def options_from(config: pytest.Config, mode: str) -> Options:
    """The run's options from the command line and the ini file, checked."""
    given = config.getoption("ticket")
    if mode == "return_to_main" and given is None:
        given = "return-to-main"  # names its state file and log
    ticket = validate_ticket(given)
    if mode != "release" and config.getoption("from_phase"):
        raise ConfigError(f"--from is for -m release; a {mode} run always runs whole")
    repo_opt = config.getoption("repo") or config.getini("release_repo")
    repo = Path(config.rootpath, repo_opt) if repo_opt else Path.cwd()
    if config.getoption("repo"):
        repo_source = f"--repo {repo_opt}"
    elif repo_opt:
        repo_source = f"the ini option release_repo = {repo_opt}"
        repo_source += f", from the rootdir {config.rootpath}"
    else:
        repo_source = "the current directory"
    branch = validate_branch(config.getoption("branch"))
    base_sha = config.getoption("base_sha")
    if branch != "main" and not config.getoption("force_allow_non_main"):
        raise ConfigError(
            f"--branch {branch} is not main: a release from another branch needs "
            "--force-allow-non-main",
            next_command=f"pytest -m release --ticket {ticket} --branch {branch} "
            "--force-allow-non-main",
        )
    return Options(
        ticket=ticket,
        repo=repo.resolve(),
        branch=branch,
        force_allow_non_main=config.getoption("force_allow_non_main"),
        from_phase=config.getoption("from_phase"),
        base_sha=validate_sha(base_sha) if base_sha is not None else None,
        container_prefix=config.getini("container_prefix") or "",
        script_timeout=_ini_number(config, "release_script_timeout", 1800),
        stop_timeout=_stop_timeout(config),
        compose_timeout=_ini_number(config, "release_compose_timeout", 600),
        pull=config.getini("release_pull"),
        parallel=_parallel(config),
        mode=mode,
        skip_git=config.getoption("skip_git"),
        skip_data=config.getoption("skip_data"),
        ini_overrides=typed_overrides(config.invocation_params.args),
        repo_source=repo_source,
    )


def _parallel(config: pytest.Config) -> int:
    given = config.getoption("parallel")
    raw = given if given is not None else (config.getini("release_parallel") or "1")
    where = "--parallel" if given is not None else "ini option release_parallel ="
    if not str(raw).isdigit() or not 1 <= int(raw) <= MAX_PARALLEL:
        raise ConfigError(f"{where} {raw!r} must be a whole number from 1 to {MAX_PARALLEL}")
    return int(raw)


def _stop_timeout(config: pytest.Config) -> int | None:
    """Unset: compose's own rule decides (the service's stop_grace_period, else its default)."""
    if not config.getini("release_stop_timeout"):
        return None
    # Up, never down: 0.5 must not become --timeout 0, an instant SIGKILL.
    return math.ceil(_ini_number(config, "release_stop_timeout", 0))


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
    mode = run_mode(config)
    if mode is None or not for_the_engine(config):
        return  # not a release run: no marker, no class, no import of the machinery
    for name in MODES:
        config.addinivalue_line("markers", f"{name}: a step of release-phases' {name} run")
    config.addinivalue_line("markers", "phase(name): the release phase a step belongs to")
    config.addinivalue_line(
        "markers", "side_by_side: a per-service step that --parallel runs as a wave"
    )
    config.addinivalue_line(
        "markers", "check: a step that runs even after another check failed (verify's)"
    )
    config.addinivalue_line(
        "markers",
        "not_with(option, reason): a step that does not apply when the run's option is set",
    )
    # The machinery loads here, for a release run only.
    from release_phases.context import ReleaseContext

    # Known before anything is planned, printed or written: an error met while
    # planning is masked too. The compose files' secrets are added by the context.
    masking.KNOWN.add(masking.from_environ(os.environ))
    try:
        options = options_from(config, mode)
        keyword = config.option.keyword
        expr = selection.compile_keyword(keyword) if keyword else None
        start = selection.start_phase(expr, options.from_phase) if mode == "release" else mode
        ctx = ReleaseContext.build(options, start)
    except ReleaseError as exc:  # bad input, or git refusing a read while planning
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
        from release_phases import clock

        name = f"{ctx.ticket}-{mode}-{clock.stamp()}.html"
        config.option.htmlpath = str(ctx.paths.make_reports() / name)
        config.option.self_contained_html = True
    ledger = Ledger(phases=ctx.phases, start_phase=ctx.plan.start_phase)
    config.pluginmanager.register(Steps(ctx), "release-steps")
    config.pluginmanager.register(
        Halting(ctx.phases, not_applicable(ctx.options), in_wave(ctx.options)), "release-halting"
    )
    if mode == "release":
        config.pluginmanager.register(Selection(ctx, expr), "release-selection")
    record = Record(ctx, ledger, config)
    config.pluginmanager.register(record, "release-record")
    config.pluginmanager.register(Telling(ctx, config), "release-telling")
    if config.pluginmanager.hasplugin("html"):
        from release_phases.report import ReportDetails  # only with pytest-html

        config.pluginmanager.register(ReportDetails(ctx, record.summary), "release-report")


def pytest_unconfigure(config: pytest.Config) -> None:
    from release_phases import progress

    progress.install(None)
    ctx = config.stash.get(CONTEXT, None)
    html = config.getoption("htmlpath", None)
    if ctx is not None and html and Path(html).exists():
        Path(html).chmod(0o600)  # pytest-html wrote it with the umask's mode
    if ctx is not None and ctx.plan.e2e_snapshot is not None:
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


@pytest.fixture(scope="session")
def wave(request: pytest.FixtureRequest, release: ReleaseContext) -> Iterator[Wave | None]:
    """The services migrated (or, in a revert, restored) side by side, with --parallel
    above 1; else None. Made when a step first asks: after the pull, or the git revert."""
    if release.options.parallel <= 1:
        yield None
        return
    from release_phases import migrate, revert
    from release_phases.wave import Wave

    services = list(release.plan.services)  # the order the steps run in (a revert's: reversed)
    if release.options.mode == "revert":
        # Backwards: a service is restored once those that came after it are.
        declared = {s: release.released_after(s) for s in services}
        after = {s: [o for o in services if s in declared[o]] for s in services}
        phase, name = "revert", "test_restore"
        work: Callable[[ReleaseContext, str, Step], object] = revert.restore_service
    else:
        after = {s: list(release.manifest(s).after) for s in services}
        phase, name, work = "migrate", "test_migrate", migrate.migrate_service
    side_by_side = Wave(
        services,
        after,
        release.options.parallel,
        work=lambda service, step: work(release, service, step),
        new_step=lambda service: Step(phase=phase, name=name, service=service),
    )
    # Record closes it too, before it lets go of the lock (a stopped run ends here late).
    request.config.stash[WAVE_RUNNING] = side_by_side
    yield side_by_side
    side_by_side.close()


@pytest.fixture
def e2e(request: pytest.FixtureRequest) -> ServiceUnderTest:
    """For a service's e2e tests: its manifest and its endpoint, as released."""
    from release_phases.verify import ServiceUnderTest

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
        service: str | None = callspec.params["service"]
        return service
    return item.stash.get(E2E_SERVICE, None)


def not_applicable(options: Options) -> Callable[[pytest.Item], str | None]:
    """A step marked `not_with("skip_git", reason=...)` does not apply under --skip-git."""

    def reason(item: pytest.Item) -> str | None:
        for marker in item.iter_markers("not_with"):
            if getattr(options, marker.args[0]):
                return str(marker.kwargs["reason"])
        return None

    return reason


def in_wave(options: Options) -> Callable[[pytest.Item], bool]:
    """With --parallel above 1, the per-service steps marked `side_by_side` run as a
    wave (`wave.Wave`): none depends on another, the step after them on all."""

    def side_by_side(item: pytest.Item) -> bool:
        return (
            options.parallel > 1
            and item.get_closest_marker("side_by_side") is not None
            and service_of(item) is not None
        )

    return side_by_side


class Steps:
    """One step per planned service, and a service's e2e tests as verify checks."""

    def __init__(self, ctx: ReleaseContext) -> None:
        self.ctx = ctx

    def pytest_itemcollected(self, item: pytest.Item) -> None:
        for service, where in self.ctx.plan.e2e.items():
            if item.path.is_relative_to(where):
                item.stash[E2E_SERVICE] = service
                item.add_marker(pytest.mark.release)
                item.add_marker(pytest.mark.phase("verify"))
                item.add_marker(pytest.mark.check)
                item.add_marker(pytest.mark.order(5))  # after the image and health checks

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "service" in metafunc.fixturenames:
            services = list(self.ctx.plan.services)
            metafunc.parametrize("service", services or [None], ids=services or ["none"])

    @pytest.hookimpl(wrapper=True, tryfirst=True)  # before Halting chains the steps
    def pytest_collection_modifyitems(
        self, session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
    ) -> Generator[None]:
        # A per-service step when no service changed is not a step at all: dropped
        # quietly, neither run nor reported nor depended on.
        items[:] = [
            item
            for item in items
            if not ("service" in getattr(item, "fixturenames", ()) and service_of(item) is None)
        ]
        return (yield)


class Halting:
    """Each step's pytest-dependency mark, derived from the run's steps.

    The chain is computed over every collected step before any is deselected or
    reordered (a wrapper runs first), in the run's phase order and, within a phase
    (one module each), in collection order: the order pytest-order gives them. So
    the first step `--from` or `-k` runs still depends on the step before it, which
    `Selection` registers as passed when the state file says its phase is done.

    The marks are put on once collection is finished, after pytest-order sorted:
    it reads dependency marks too, and would print a warning for every one that
    names a deselected step.
    """

    def __init__(
        self,
        phases: Sequence[str],
        not_applicable: Callable[[pytest.Item], str | None] = lambda _item: None,
        in_wave: Callable[[pytest.Item], bool] = lambda _item: False,
    ) -> None:
        self.phases = tuple(phases)
        self.not_applicable = not_applicable
        self.in_wave = in_wave
        self.chain: dict[str, list[str]] = {}

    @pytest.hookimpl(wrapper=True)
    def pytest_collection_modifyitems(
        self, session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
    ) -> Generator[None]:
        steps: list[pytest.Item] = []
        for item in items:
            if phase_of(item) not in self.phases:
                continue
            reason = self.not_applicable(item)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))
            else:
                steps.append(item)
        steps.sort(key=lambda item: self.phases.index(phase_of(item) or ""))  # stable
        self.chain = dependencies([(i.nodeid, self._kind(i)) for i in steps])
        return (yield)

    def _kind(self, item: pytest.Item) -> str:
        if item.get_closest_marker("check") is not None:
            return CHECK
        return WAVE if self.in_wave(item) else ORDINARY

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for item in session.items:
            if item.nodeid in self.chain:
                mark = pytest.mark.dependency(
                    name=item.nodeid, depends=self.chain[item.nodeid], scope="session"
                )
                item.add_marker(mark)


class Selection:
    """`--from`, a phase-aware `-k`, and what the selected steps depend on."""

    def __init__(self, ctx: ReleaseContext, expr: Expression | None) -> None:
        self.ctx = ctx
        self.expr = expr
        self.satisfied: list[str] = []
        self.totals: dict[str, int] = {}
        self.dropped: list[pytest.Item] = []

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(
        self, session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        start = self.ctx.plan.start_phase
        keep: list[pytest.Item] = []
        for item in items:
            phase = phase_of(item)
            if phase is None:
                keep.append(item)
            elif PHASES.index(phase) < PHASES.index(start) or not self._keyword_allows(item):
                self.dropped.append(item)
            else:
                keep.append(item)
        # -k has been applied here, phase-aware; pytest's substring matching must not
        # apply it again after us.
        config.option.keyword = ""
        self.totals = _count(items)
        if self.dropped:
            config.hook.pytest_deselected(items=self.dropped)
            items[:] = keep

    def _keyword_allows(self, item: pytest.Item) -> bool:
        if self.expr is None:
            return True
        phase = phase_of(item) or ""
        return selection.matches(self.expr, phase, lambda word: word in item.name)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        items = session.items
        selected = _count(items)
        found = self.ctx.found
        done = {p for p in PHASES if found is not None and found.done(p)}
        problem = selection.check_contiguous(selected, self.totals, done)
        if problem:
            raise pytest.UsageError(
                f"{problem} ({self.ctx.paths.state}); nothing was run or changed.\n"
                f"Next: {self.ctx.options.command()}   (a full release)"
            )
        self.satisfied = [p for p in PHASES if p in done and not selected.get(p)]
        passed = [i for i in self.dropped if phase_of(i) in self.satisfied]
        if items and passed:
            register_passed(items[0], [i.nodeid for i in passed])

    def pytest_report_collectionfinish(self, config: pytest.Config) -> list[str]:
        plan = self.ctx.plan
        lines = [f"release plan for ticket {self.ctx.ticket} in {self.ctx.repo}:"]
        lines += [f"  {line}" for line in plan.describe()]
        if self.satisfied:
            lines.append(f"  done in an earlier run: {' '.join(self.satisfied)}")
        return [masking.mask(line) for line in lines]  # a problem may quote a command's output


def mask_report(rep: pytest.TestReport) -> None:
    """The run's secrets out of what pytest prints and pytest-html keeps of a test: its
    traceback or message, its skip reason and its captured output."""
    longrepr = rep.longrepr
    if isinstance(longrepr, tuple):  # a skip: (file, line, reason)
        path, line, reason = longrepr
        rep.longrepr = (path, line, masking.mask(reason))
    elif longrepr is not None:
        text = rep.longreprtext
        if masking.mask(text) != text:  # else keep pytest's own object, with its colours
            rep.longrepr = masking.mask(text)
    rep.sections = [(title, masking.mask(content)) for title, content in rep.sections]


def register_passed(any_item: pytest.Item, names: Sequence[str]) -> None:
    """Tell pytest-dependency that these steps passed (in an earlier run).

    Its manager has no public way to record a result that no test of this session
    produced; this is the one place that writes into it.
    """
    from pytest_dependency import DependencyItemStatus, DependencyManager

    manager = DependencyManager.getManager(any_item, scope="session")
    for name in names:
        status = DependencyItemStatus()
        status.results = dict.fromkeys(DependencyItemStatus.Phases, "passed")
        manager.results[name] = status


def _count(items: Sequence[pytest.Item]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        phase = phase_of(item)
        if phase:
            counts[phase] = counts.get(phase, 0) + 1
    return counts


class Telling:
    """Where the run stands, on the terminal: its configuration in pytest's header, and
    the progress of long steps (`progress.say`) while they run, unless `-q`."""

    def __init__(self, ctx: ReleaseContext, config: pytest.Config) -> None:
        from release_phases import progress

        self.ctx = ctx
        self.config = config
        if config.get_verbosity() >= 0:
            progress.install(self.write_line)

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        from release_phases import progress
        from release_phases.manifest import Health

        options = self.ctx.options
        if options.mode not in ("release", "revert"):
            return []
        try:
            compose = str(self.ctx.host.compose)  # detected once, for the run's steps too
        except ReleaseError as exc:  # the readiness step says so, as a failure
            compose = f"none found ({exc.what.splitlines()[0]})"
        lines = progress.header(options, compose, Health().timeout)
        return [masking.mask(line) for line in lines]

    def write_line(self, line: str) -> None:
        """A whole line on the terminal while a step runs. Past the step's output
        capture, as pytest's own live logging writes; pytest's reporter first ends a
        line it left open (`test_migrate.py .`)."""
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None:
            return
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        # From a --parallel thread too: `progress.say` holds its lock, so one line at a
        # time suspends the capture. pytest's capture is not per thread: output of the
        # main thread in that moment is shown rather than captured, and a line written
        # just as the main thread starts or ends a step may land in that step's
        # captured output instead. Suspending and resuming twice is harmless.
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            reporter.write_line(line)


class Record:
    """Tells the ledger what each step did, has the journal write it, prints the outcome."""

    def __init__(self, ctx: ReleaseContext, ledger: Ledger, config: pytest.Config) -> None:
        self.ctx = ctx
        self.ledger = ledger
        self.journal: Journal = ctx.journal
        self.config = config
        #: What stopped the run (a signal), for the open phase's failure.
        self.stopped_by: ReleaseError | None = None
        #: The signal handlers this run replaced, put back at the end.
        self.handlers: dict[int, Any] = {}
        #: What the terminal was told about a stale lock taken over, for the summary too.
        self.took_over_lines: list[str] = []

    def summary(self) -> Summary:
        return self.ledger.summary(self.ctx.options, self.journal.state)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for item in session.items:
            phase = phase_of(item)
            if phase:
                self.ledger.last_step[phase] = item.nodeid

    def pytest_deselected(self, items: Sequence[pytest.Item]) -> None:
        self.ledger.deselected.update(p for p in map(phase_of, items) if p)

    # -- a step -------------------------------------------------------------------------
    # Not in the wrapper below: a wrapper that raises before it yields keeps the wrappers
    # inside it (pytest's logging) from setting up, and their teardown then fails with a
    # KeyError, a traceback under the operator's message. A plain hook runs inside them
    # (named pytest_* all the same: pytest looks at no other name for a hook).
    @pytest.hookimpl(tryfirst=True, specname="pytest_runtest_setup")
    def pytest_runtest_setup_opens(self, item: pytest.Item) -> None:
        phase = phase_of(item)
        if phase is not None and self.ledger.refused:
            # The run was refused (the lock is held): no step may run unrecorded. Steps
            # that depend on a failed one are skipped by pytest-dependency, but a check
            # of `-k verify` depends on a step of an earlier run, registered as passed.
            pytest.skip(self.ledger.refused)
        if phase is not None and not self.ledger.started:
            self._open(phase)

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Generator[None]:
        phase = phase_of(item)
        try:
            return (yield)
        except pytest.skip.Exception as skip:
            halted = self.ledger.halt_reason()
            if phase is not None and halted and DEPENDS_ON in str(skip.msg):
                raise pytest.skip.Exception(halted) from None
            raise

    def _open(self, phase: str) -> None:
        """The first step takes the lock; a refusal fails that step and halts the rest."""
        fresh = self.ctx.options.mode == "release" and self.ctx.plan.start_phase == "prepare"
        try:
            self.journal.open(fresh_release=fresh, phase=phase)
        except ConfigError:
            self.ledger.refused = "release halted: the state file changed while planning"
            raise
        except ReleaseError:
            self.ledger.refused = "release halted: the lock is held by another release"
            raise
        self.ledger.started = True
        # The lock file names each command's process group from here on.
        self.ctx.host.runner.children = self.journal
        if self.journal.took_over is not None:
            self._took_over(phase)
        # From here on a signal ends the run the way Ctrl-C does: the step's processes
        # are killed (the Runner kills their group), the open phase is recorded failed
        # with the signal, the lock is let go. SIGTERM would otherwise end Python at once.
        for signum in (signal.SIGINT, signal.SIGTERM):
            self.handlers[signum] = signal.signal(signum, self._stop)

    def _took_over(self, phase: str) -> None:
        """Say so on the terminal, and remove the throwaway containers the dead run left."""
        taken = self.journal.took_over
        assert taken is not None
        lines = taken.lines()
        try:
            removed = self.ctx.host.remove_leftover_helpers()
        except ReleaseError as exc:  # the engine does not answer: preflight will say so
            lines.append(f"could not look for its throwaway containers: {exc.what}")
        else:
            if removed:
                names = " ".join(removed)
                self.journal.log(phase, "lock", action="removed-helpers", containers=names)
                lines.append(f"removed its throwaway containers: {names}")
        self.took_over_lines = lines
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            for line in lines:
                reporter.write_line(line, yellow=True)

    def _stop(self, signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        phase = self.ledger.open_phase or "?"
        if phase in PHASES[1:]:
            go_on = f"go on with {self.ctx.options.command(f'--from={phase}')}   or roll back: "
            go_on += self.ctx.options.command(mode="revert")
        else:
            go_on = ""  # prepare, revert: the ledger names the rerun (--base-sha after a pull)
        self.stopped_by = ReleaseError(
            f"the run was stopped by {name} during phase {phase}",
            untouched="what the phase had done so far stays as it was; the step's own "
            "processes were killed",
            next_command=go_on,
            rc=128 + signum,
            step=name,
        )
        # Imported here: the host package loads Compose's and the manifest's machinery,
        # which a pytest run outside a deploy repository must not pay for.
        from release_phases.host.shell import INTERRUPTED

        INTERRUPTED.set()  # commands and waits under way in --parallel threads end too
        raise KeyboardInterrupt(name)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_call(self, item: pytest.Item) -> None:
        phase = phase_of(item)
        if phase is not None:
            self.journal.record(self.ledger.step_runs(phase))
            # Where a run killed mid-step stood: the log's last line names the step.
            name = item.name.split("[")[0]
            self.journal.log(phase, "began", step=name, service=service_of(item))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        rep = yield
        mask_report(rep)
        phase = phase_of(item)
        if phase is None:
            return rep
        if rep.skipped and isinstance(rep.longrepr, tuple):
            # pytest's skip line names where the skip was raised: a line of this plugin
            # or of a phase module, which tells an operator nothing. The step does. A
            # location without a line (None) is one pytest's summary prints as it is.
            rep.longrepr = (f"{phase} {item.name}", None, rep.longrepr[2])  # type: ignore[assignment]
        exc = call.excinfo.value if call.excinfo else None
        if isinstance(exc, ReleaseError):
            rep.longrepr = str(exc)  # the operator's message, not a traceback
        if not self.ledger.started or rep.skipped:
            return rep
        step = item.stash.get(STEP, None)
        if step is not None and rep.when == "call":
            self.journal.merge(step, passed=rep.passed)
        if rep.failed:
            error = exc if isinstance(exc, ReleaseError) else None
            failure = Failure(
                phase=phase,
                item=item.name,
                service=service_of(item),
                error=error,
                text="" if error else (str(exc) if exc else rep.longreprtext),
                check=item.get_closest_marker("check") is not None,
            )
            self.journal.record(self.ledger.step_failed(failure))
        elif rep.when == "call":
            self.ledger.step_passed()
        if rep.when == "teardown":
            self.journal.record(self.ledger.step_done(phase, item.nodeid))
        return rep

    # -- the end ------------------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)  # before pytest-html writes the report from our state
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        for signum, handler in self.handlers.items():
            signal.signal(signum, handler)
        wave = self.config.stash.get(WAVE_RUNNING, None)
        if wave is not None:
            # Services still under way (--parallel) change what the lock guards: it is
            # held, and the state written, only once they are done (at once when stopped).
            wave.close()
        if self.journal.is_open:
            clean = exitstatus == 0
            self.journal.record(self.ledger.end(clean=clean, stopped_by=self.stopped_by))
            self.journal.close()
        if self.ledger.ran == 0 and not self.config.option.collectonly and exitstatus == 0:
            session.exitstatus = pytest.ExitCode.NO_TESTS_COLLECTED

    def pytest_terminal_summary(self, terminalreporter: TerminalReporter) -> None:
        if self.config.option.collectonly:
            return
        tr = terminalreporter
        tr.section("release-phases")
        for line in self.lines():
            tr.write_line(line)

    def lines(self) -> list[str]:
        summary = self.summary()
        st = self.journal.state
        paths = self.ctx.paths
        # return_to_main has no ticket of its own (its files are named return-to-main).
        mode = self.ctx.options.mode
        who = mode if mode == "return_to_main" else f"ticket {self.ctx.ticket}"
        lines = [f"{who}: {summary.headline}"]
        stop = self.stopped_by
        if stop is not None:
            # No step's report says it: the run itself was stopped.
            lines += [stop.what, f"left as it was: {stop.untouched}"]
        lines += self.took_over_lines
        if self.ledger.started:
            lines.append(f"state file: {paths.state}  (PHASE={st.phase} {st.phase_status})")
            lines.append(f"log: {paths.log}")
        if st.extra.get("DRIFT"):
            lines.append(f"needs a release (differs from main): {st.extra['DRIFT']}")
        html = self.config.getoption("htmlpath", None)
        if html:
            lines.append(f"report: {html}")
        lines.append(f"next: {summary.next_command}")
        return [masking.mask(line) for line in lines]
