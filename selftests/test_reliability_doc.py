"""docs/reliability.md is the reliability suite's own output, and stays in step with it."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

from selftests.support.reliability import REGENERATE

REPO_ROOT = Path(__file__).resolve().parents[1]
DOC = REPO_ROOT / "docs" / "reliability.md"
ROW = re.compile(r"^\| (?P<what>.*) \| (?P<result>[^|]+) \| `(?P<nodeid>.*)` \|$")


def _rows(text: str) -> list[dict[str, str]]:
    found = (ROW.match(line) for line in text.splitlines())
    return [
        {k: v.replace("\\|", "|") for k, v in m.groupdict().items()}
        for m in found
        if m and m["nodeid"] != "test"
    ]


def test_the_doc_lists_every_case_of_the_full_suite_and_no_other():
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "reliability", "--full"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cases = {line for line in collected.splitlines() if "::" in line}
    documented = {row["nodeid"] for row in _rows(DOC.read_text())}
    assert cases, collected
    assert documented == cases, (
        f"docs/reliability.md is out of date; regenerate it with `{REGENERATE}`\n"
        f"  not in the doc: {sorted(cases - documented)}\n"
        f"  no longer in the suite: {sorted(documented - cases)}"
    )


def test_the_docs_totals_are_its_rows_and_every_case_passed():
    text = DOC.read_text()
    rows = _rows(text)
    totals = re.findall(r"^\| [A-Z][^|]* \| (\d+) \| (\d+) \| (\d+) \| (\d+) \|$", text, re.M)
    assert sum(int(tried) for tried, *_ in totals) == len(rows)
    assert sum(int(passed) for _, passed, _, _ in totals) == len(rows)
    assert "(full mode)" in text
    assert not [row for row in rows if row["result"].startswith("**")]


def test_a_failed_case_shows_failed_and_full_only_cases_wait_for_full(pytester):
    pytester.makeconftest('pytest_plugins = ["selftests.support.reliability"]')
    pytester.makepyfile(
        textwrap.dedent(
            """
            import pytest

            @pytest.mark.reliability("fault", "a fault that is handled")
            def test_handled():
                pass

            @pytest.mark.reliability("kill", "a kill point")
            @pytest.mark.parametrize("point", ["early", "late"])
            def test_kill(point):
                assert point == "early"

            @pytest.mark.full_only
            @pytest.mark.reliability("kill", "a long kill point")
            def test_long():
                pass
            """
        )
    )
    pytester.syspathinsert(REPO_ROOT)
    quick = pytester.runpytest("--reliability-doc=quick.md")
    quick.assert_outcomes(passed=2, failed=1, deselected=1)
    doc = (pytester.path / "quick.md").read_text()
    assert "(quick mode)" in doc
    assert "| Kill points | 2 | 1 | 1 | 0 |" in doc
    assert "| a kill point [late] | **FAILED** |" in doc
    assert "a long kill point" not in doc
    full = pytester.runpytest("--full", "--reliability-doc=full.md")
    full.assert_outcomes(passed=3, failed=1)
    assert "| a long kill point | recovered |" in (pytester.path / "full.md").read_text()
