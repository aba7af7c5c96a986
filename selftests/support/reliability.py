"""The reliability suite's ledger: which kill points, faults and bad inputs were tried.

A test joins the suite with ``@pytest.mark.reliability(KIND, "what was done")``; a
parametrized test's every case counts on its own, named by the text and its id.
``--reliability-doc PATH`` writes, after the run, the table of every case tried with
its result and the totals, so the doc's figures are always the ones of a real run
(README's command regenerates it). Cases marked ``full_only`` run only with ``--full``:
CI runs the quick suite, a person the whole one.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

#: The kinds of case, in the doc's order, with the word for a case that passed.
KINDS = {
    "kill": ("Kill points", "recovered"),
    "signal": ("Signals", "stopped cleanly"),
    "fault": ("Faults injected", "handled"),
    "bad input": ("Bad input", "refused"),
}

#: With `=`: pytest reads a bare path before the conftest that defines this option as
#: where to look for tests, and would never load that conftest.
REGENERATE = "python3 -m pytest -m reliability --full --reliability-doc=docs/reliability.md"


@dataclass(frozen=True)
class Case:
    kind: str
    what: str
    outcome: str  # passed, failed or skipped
    nodeid: str


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("reliability suite")
    group.addoption(
        "--full",
        action="store_true",
        help="run the reliability suite's long cases too (CI runs the quick suite)",
    )
    group.addoption(
        "--reliability-doc",
        metavar="PATH",
        help="write the reliability suite's cases and totals to PATH after the run",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "reliability(kind, what): a case of the reliability suite; kind is one of "
        + ", ".join(KINDS),
    )
    config.addinivalue_line("markers", "full_only: runs only with --full")
    config.stash[_cases] = {}


_cases = pytest.StashKey[dict[str, Case]]()


def case_of(item: pytest.Item) -> tuple[str, str] | None:
    """(kind, what) for a reliability case, or None."""
    marker = item.get_closest_marker("reliability")
    if marker is None:
        return None
    kind, what = marker.args
    if kind not in KINDS:
        raise pytest.UsageError(f"{item.nodeid}: reliability kind {kind!r} is not one of {KINDS}")
    callspec = getattr(item, "callspec", None)
    if callspec is not None:
        what = f"{what} [{callspec.id}]"
    return kind, what


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("full"):
        return
    quick = [item for item in items if item.get_closest_marker("full_only") is None]
    if len(quick) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in quick])
        items[:] = quick


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    report = yield
    found = case_of(item)
    if found is None:
        return report
    cases = item.config.stash[_cases]
    # Setup, call and teardown each report; the worst of them is the case's result.
    earlier = cases.get(item.nodeid)
    outcome = report.outcome
    if earlier is not None and earlier.outcome != "passed" and outcome == "passed":
        outcome = earlier.outcome
    if earlier is None or outcome != "passed" or earlier.outcome == "passed":
        cases[item.nodeid] = Case(found[0], found[1], outcome, item.nodeid)
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = session.config.getoption("reliability_doc")
    cases = list(session.config.stash[_cases].values())
    if path and cases:
        Path(path).write_text(render(cases, full=session.config.getoption("full")))


def render(cases: list[Case], *, full: bool) -> str:
    lines = [
        "# Reliability: what the suite tried, and what happened",
        "",
        "Written by the reliability suite itself after a run "
        f"({'full' if full else 'quick'} mode); do not edit by hand. Regenerate with:",
        "",
        f"    {REGENERATE}",
        "",
        "Each row is one case the suite ran: real git and a real Docker Engine wherever the case "
        "needs them, pure functions where it does not.",
        "",
    ]
    totals: Counter[tuple[str, str]] = Counter()
    for case in cases:
        totals[case.kind, case.outcome] += 1
    lines += [
        "## Totals",
        "",
        "| kind | tried | passed | failed | skipped |",
        "|---|---|---|---|---|",
    ]
    for kind, (title, _) in KINDS.items():
        tried = sum(n for (k, _), n in totals.items() if k == kind)
        if tried:
            lines.append(
                f"| {title} | {tried} | {totals[kind, 'passed']} | {totals[kind, 'failed']} "
                f"| {totals[kind, 'skipped']} |"
            )
    for kind, (title, passed_word) in KINDS.items():
        rows = sorted((c for c in cases if c.kind == kind), key=lambda c: c.nodeid)
        if not rows:
            continue
        lines += ["", f"## {title}", "", "| case | result | test |", "|---|---|---|"]
        for case in rows:
            result = passed_word if case.outcome == "passed" else f"**{case.outcome.upper()}**"
            what, nodeid = (text.replace("|", "\\|") for text in (case.what, case.nodeid))
            lines.append(f"| {what} | {result} | `{nodeid}` |")
    return "\n".join(lines) + "\n"
