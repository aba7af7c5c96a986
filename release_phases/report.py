"""The HTML report of a run, as a post-mortem: pytest-html, with the release on top.

Its top answers what an operator asks the morning after: which ticket, how it
ended and where it stopped, what was pulled (BASE_SHA..MERGE_SHA and the commits
between), which services and backups, how long each phase took, the state file
and the log as they stood at the end, and the command to run next. Each step's
row carries its details (compose output, health probes, container log tail,
script output, expected against actual image), shown inline, failed or not.

Everything on top is read at the very end: the plugin's Record writes the last
state in a tryfirst `pytest_sessionfinish`, before pytest-html asks for the
summary, and the outcome, where it stopped and the next command are the
ledger's `Summary`, the same the terminal prints.
Every value is escaped, and the file refers to nothing outside itself; what it
quotes (outputs, the state file, the log, error messages) has the run's secrets
masked, in the same `escape` that every value passes through.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Generator
from dataclasses import dataclass
from html import escape as html_escape
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from pytest_html import extras

from release_phases import PHASES, clock
from release_phases.errors import ConfigError
from release_phases.ledger import Outcome, Summary
from release_phases.masking import mask
from release_phases.state import ALL_PHASES, State
from release_phases.steps import STEP

if TYPE_CHECKING:
    from release_phases.context import ReleaseContext

#: Ours, and over pytest-html's own: its body text, links, result table and buttons are
#: grey (#999) and its skipped count orange on white, too faint to read at 3 a.m.
#: Every colour here is at least 4.5:1 against its background.
STYLE = """
body, a, #results-table, .filters button, .collapse button { color: #1f1f1f; }
.collapsible td:not(.col-links):hover::after, #environment-header h2:hover::after,
  .filters button:hover, .collapse button:hover { color: #555; }
span.skipped, span.xfailed, span.rerun, .skipped .col-result, .xfailed .col-result,
  .rerun .col-result { color: #8a4b00; }
span.error, span.failed, span.xpassed, .error .col-result, .failed .col-result,
  .xpassed .col-result { color: #b00000; }
span.passed, .passed .col-result { color: #006400; }
.release { font-size: 14px; margin: 0 0 1.5em; color: #1f1f1f; }
.release h2 { margin-bottom: 0.3em; }
.release h3 { margin: 1.2em 0 0.3em; font-size: 15px; }
.release table { border-collapse: collapse; }
.release th, .release td { border: 1px solid #ccc; padding: 3px 8px; text-align: left;
  vertical-align: top; }
.release th { background: #f2f2f2; }
.release pre, .release-detail pre { background: #f7f7f7; border: 1px solid #ddd; color: #1f1f1f;
  padding: 6px 8px; white-space: pre-wrap; word-break: break-all; margin: 0.2em 0 0.8em; }
.release ul.next { margin: 0; padding-left: 1.4em; }
.release ul.next li { margin: 0.15em 0; }
.release code { color: #1f1f1f; }
.release .outcome-failed { color: #b00000; font-weight: bold; }
.release .outcome-ok { color: #006400; font-weight: bold; }
.release-detail h4 { margin: 0.6em 0 0.2em; font-size: 14px; color: #1f1f1f; }
"""

#: pytest-html puts its Environment table (Python, packages, plugins) first; what the
#: operator opens the report for goes above it. Run where the summary is parsed, after
#: the Environment's header, so the page never shows them in the other order.
TO_TOP = """<script>
(function () {
  var release = document.getElementById("release");
  var environment = document.getElementById("environment-header");
  if (release && environment) { environment.parentNode.insertBefore(release, environment); }
})();
</script>"""


def escape(text: str) -> str:
    """``text`` for HTML, with the run's secrets masked (before escaping, so a secret
    with `&` or `<` in it is still recognised)."""
    return html_escape(mask(text))


def next_steps(text: str) -> list[str]:
    """The next command as the steps it offers, one each: split where it offers another
    (`   or roll back: ...`) or a later one (`; then ...`)."""
    steps: list[str] = []
    for offered in re.split(r"\s{3,}(?=or )", text):
        steps += re.split(r";\s+(?=then )", offered)
    return [step.strip() for step in steps if step.strip()]


#: Where a step's command starts, when it does not come in backticks.
COMMAND = re.compile(r"\bpytest -m ")


def step_html(step: str) -> str:
    """One step with its commands as code, each copyable on its own: those in
    backticks, and the engine's own (`pytest -m ...`, to the end of the step)."""
    found = COMMAND.search(step)
    head, command = (step[: found.start()], step[found.start() :]) if found else (step, "")
    parts = re.split(r"`([^`]+)`", head)
    html = "".join(
        f"<code>{escape(part)}</code>" if odd else escape(part)
        for odd, part in zip(itertools.cycle((False, True)), parts, strict=False)
    )
    return html + (f"<code>{escape(command)}</code>" if command else "")


def next_html(text: str) -> str:
    """The next command, a step a line."""
    items = "".join(f"<li>{step_html(step)}</li>" for step in next_steps(text))
    return f"<ul class='next'>{items}</ul>"


def detail_html(title: str, text: str) -> str:
    """One (title, text) detail of a step, as shown in its row."""
    return (
        f"<div class='release-detail'><h4>{escape(title)}</h4>"
        f"<pre>{escape(text or '(empty)')}</pre></div>"
    )


@dataclass(frozen=True)
class NotRun:
    nodeid: str
    reason: str


class ReportDetails:
    """The HTML report: each step's details in its row, the release's post-mortem on top."""

    def __init__(self, ctx: ReleaseContext, summary: Callable[[], Summary]) -> None:
        self.ctx = ctx
        self.summary = summary
        self.not_run: list[NotRun] = []

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        rep = yield
        step = item.stash.get(STEP, None)
        if step is None or not step.details:
            return rep
        # A failed step keeps what it recorded before failing: that is the post-mortem.
        if rep.when == "call" or (rep.when == "setup" and rep.failed):
            rep.extras = [  # type: ignore[attr-defined]  # pytest-html's attribute
                *getattr(rep, "extras", []),
                *(extras.html(detail_html(title, text)) for title, text in step.details),
            ]
        return rep

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped:
            self.not_run.append(NotRun(report.nodeid, _skip_reason(report)))

    def pytest_html_results_table_html(self, report: pytest.TestReport, data: list[str]) -> None:
        # A skipped row would show pytest's (file, line, reason) tuple; the reason is
        # what the operator needs ("release halted: migrate failed on api").
        if report.skipped and data and report.longreprtext:
            data[0] = escape(_skip_reason(report)) + "\n"

    def pytest_html_results_summary(
        self, prefix: list[str], summary: list[str], postfix: list[str], session: pytest.Session
    ) -> None:
        prefix.append(f"<style>{STYLE}</style>{self.post_mortem()}{TO_TOP}")

    # -- the top of the report ------------------------------------------------------------
    def post_mortem(self) -> str:
        ctx = self.ctx
        state_path, log_path = ctx.paths.state, ctx.paths.log
        state_text = _read(state_path)
        saved, problem = _parse(state_text, state_path)
        summary = self.summary()
        css = "outcome-ok" if summary.outcome is Outcome.COMPLETE else "outcome-failed"
        facts = [
            ("ticket", escape(ctx.ticket)),
            ("outcome", f"<span class='{css}'>{escape(summary.headline)}</span>"),
            ("stopped", escape(summary.stopped)),
            ("next command", next_html(summary.next_command)),
        ]
        if saved is not None:
            facts += [
                ("BASE_SHA", f"<code>{escape(saved.base_sha or '(not recorded)')}</code>"),
                ("MERGE_SHA", f"<code>{escape(saved.merge_sha or '(not recorded)')}</code>"),
                ("BRANCH", escape(saved.branch)),
                ("SERVICES", escape(" ".join(saved.services) or "(none)")),
                ("BACKUPS", escape(_backups(saved) or "(none)")),
            ]
        parts = [
            "<section class='release' id='release'>",
            f"<h2>Ticket {escape(ctx.ticket)}: {escape(summary.headline)}</h2>",
            _facts(facts),
        ]
        if summary.failure is not None:
            parts.append(f"<h3>What failed</h3><pre>{escape(summary.failure.message)}</pre>")
        if saved is not None:
            parts.append(self.commits(saved))
            parts.append("<h3>Phases</h3>" + _table(PHASE_COLUMNS, phase_rows(saved), "phases"))
        else:
            parts.append(f"<h3>State</h3><p>{escape(problem)}</p>")
        if self.not_run:
            items = "".join(
                f"<li><code>{escape(n.nodeid)}</code>: {escape(n.reason)}</li>"
                for n in self.not_run
            )
            parts.append(f"<h3>Steps not run</h3><ul class='not-run'>{items}</ul>")
        parts.append(_file_section("State file", state_path, state_text))
        parts.append(_file_section("Log", log_path, _read(log_path)))
        parts.append("</section>")
        return "".join(parts)

    def commits(self, saved: State) -> str:
        base, merge = saved.base_sha, saved.merge_sha
        heading = "<h3>Commits BASE_SHA..MERGE_SHA</h3>"
        if not base or not merge:
            return heading + "<p>(BASE_SHA or MERGE_SHA not recorded)</p>"
        try:
            subjects = self.ctx.git.subjects(base, merge)
        except Exception as exc:  # a report must still be written; say why the list is missing
            return heading + f"<p>could not list them: {escape(str(exc))}</p>"
        if not subjects:
            return heading + "<p>(none)</p>"
        items = "".join(f"<li><code>{escape(s)}</code></li>" for s in subjects)
        return heading + f"<ul class='commits'>{items}</ul>"


PHASE_COLUMNS = ["phase", "outcome", "started", "ended", "duration"]


def phase_rows(saved: State) -> list[tuple[str, ...]]:
    """A row per release phase, and per revert phase recorded, from the TIMESTAMP_ keys."""
    rows = []
    for phase in ALL_PHASES:
        key = phase.upper()
        start = saved.timestamps.get(f"{key}_START")
        done = saved.timestamps.get(f"{key}_DONE")
        failed = saved.timestamps.get(f"{key}_FAILED")
        if start is None:
            if phase in PHASES:
                rows.append((phase, "not run", "", "", ""))
            continue
        end = done or failed
        outcome = "done" if done else "failed" if failed else "started, no end recorded"
        rows.append((phase, outcome, start, end or "", _duration(start, end)))
    return [tuple(escape(cell) for cell in row) for row in rows]


def _duration(start: str, end: str | None) -> str:
    if not end:
        return ""
    try:
        seconds = round((clock.parse_iso(end) - clock.parse_iso(start)).total_seconds())
    except ValueError:
        return "?"
    minutes, rest = divmod(seconds, 60)
    return f"{minutes}m {rest:02d}s" if minutes else f"{rest}s"


def _backups(saved: State) -> str:
    return " ".join(f"{service}={stamp}" for service, stamp in saved.backups.items())


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return text.removeprefix("Skipped: ")


def _read(path: Path) -> str | None:
    """The file's text, or None when there is none; a report is written regardless."""
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"(could not read it: {exc})"


def _parse(text: str | None, path: Path) -> tuple[State | None, str]:
    if text is None:
        return None, f"no state file at {path}"
    try:
        return State.from_text(text, str(path)), ""
    except ConfigError as exc:
        return None, str(exc)


def _table(columns: list[str], rows: list[tuple[str, ...]], css: str) -> str:
    """Rows of already escaped cells under a header of `columns`."""
    head = "<tr>" + "".join(f"<th>{escape(c)}</th>" for c in columns) + "</tr>"
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table class='{css}'>{head}{body}</table>"


def _facts(facts: list[tuple[str, str]]) -> str:
    """A name per row, then its value (already escaped)."""
    body = "".join(f"<tr><th>{escape(name)}</th><td>{value}</td></tr>" for name, value in facts)
    return f"<table class='release-facts'>{body}</table>"


def _file_section(title: str, path: Path, text: str | None) -> str:
    shown = text if text is not None else "(no such file)"
    return f"<h3>{escape(title)} <code>{escape(str(path))}</code></h3><pre>{escape(shown)}</pre>"
