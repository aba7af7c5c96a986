"""The HTML report, as a browser shows it: headless Chromium renders it, we read the DOM.

pytest-html 4 draws the results table with JavaScript from JSON embedded in the
page, so grepping the file would prove nothing about the rows; these tests read
the DOM after the scripts ran (`chromium --dump-dom`) and take a screenshot.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from release_phases.report import ReportDetails, next_steps, step_html
from release_phases.steps import STEP, Step
from selftests.support import engine
from selftests.support.browser import Element, Page, find_chromium, low_contrast, screenshot
from selftests.support.scenario import v1_running_v2_merged

DURATION = re.compile(r"(\d+m )?\d+s")
HALTED = "release halted: migrate failed on api"


@pytest.fixture(scope="module")
def chromium() -> str:
    binary = find_chromium()
    if binary is None:
        message = "headless Chromium renders the report in these tests: apt-get install chromium"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (missing under CI=true)", pytrace=False)
        pytest.skip(message)
    return binary


def _report(run: engine.Run) -> Path:
    found = sorted((run.repo / "reports").glob(f"{run.ticket}-release-*.html"))
    assert len(found) == 1, (found, str(run))
    return found[0]


def _flat(text: str) -> str:
    return " ".join(text.split())


def _rows(page: Page) -> dict[str, Element]:
    """Result rows by test id, as the page's script built them."""
    table = page.body.by_id("results-table")
    return {row.attrs["id"]: row for row in table.find_all("tbody", "results-table-row")}


def _facts(top: Element) -> dict[str, str]:
    facts = top.find("table", "release-facts")
    return {_flat(tr.find("th").text()): _flat(tr.find("td").text()) for tr in facts.find_all("tr")}


def _phases(top: Element) -> dict[str, list[str]]:
    rows = top.find("table", "phases").find_all("tr")[1:]
    cells = [[_flat(td.text()) for td in tr.find_all("td")] for tr in rows]
    return {row[0]: row[1:] for row in cells}


@pytest.mark.parametrize(
    ("when", "failed", "shown"),
    [
        ("call", True, True),
        ("call", False, True),
        ("setup", True, True),  # what the step recorded before its setup failed
        ("setup", False, False),  # the call's report carries them
        ("teardown", True, False),
    ],
)
def test_a_steps_details_go_with_its_call_or_its_failed_setup(when, failed, shown):
    step = Step(phase="migrate", name="test_migrate[api]", service="api")
    step.detail("health probes", "time outcome\n<probe> got 500 & more")
    item = SimpleNamespace(stash=pytest.Stash())
    item.stash[STEP] = step
    rep = SimpleNamespace(when=when, failed=failed)
    hook = ReportDetails(ctx=None, summary=None).pytest_runtest_makereport(item, call=None)
    next(hook)
    with contextlib.suppress(StopIteration):
        hook.send(rep)
    contents = [extra["content"] for extra in getattr(rep, "extras", [])]
    expected = (
        "<div class='release-detail'><h4>health probes</h4>"
        "<pre>time outcome\n&lt;probe&gt; got 500 &amp; more</pre></div>"
    )
    assert contents == ([expected] if shown else [])


@pytest.mark.parametrize(
    ("text", "steps"),
    [
        (
            "fix the cause, then pytest -m release --ticket 1 --from=migrate   or roll back:"
            " pytest -m revert --ticket 1",
            [
                "fix the cause, then pytest -m release --ticket 1 --from=migrate",
                "or roll back: pytest -m revert --ticket 1",
            ],
        ),
        (
            "make more than 2.0 MiB free on the filesystem of /b (`df -h /b`); then"
            " pytest -m release --ticket 1 --base-sha abc1234",
            [
                "make more than 2.0 MiB free on the filesystem of /b (`df -h /b`)",
                "then pytest -m release --ticket 1 --base-sha abc1234",
            ],
        ),
        (  # one sentence: "nothing" is no step of its own
            "nothing; to roll back this release: pytest -m revert --ticket 1",
            ["nothing; to roll back this release: pytest -m revert --ticket 1"],
        ),
        (
            "see the error above, then pytest -m release --ticket 1",
            ["see the error above, then pytest -m release --ticket 1"],
        ),
        ("", []),
    ],
)
def test_the_next_command_is_split_into_the_steps_it_offers(text, steps):
    assert next_steps(text) == steps


def test_a_steps_commands_are_code_each_on_its_own():
    assert step_html("or roll back: pytest -m revert --ticket 1") == (
        "or roll back: <code>pytest -m revert --ticket 1</code>"
    )
    assert step_html("see why with `docker logs x >&2`; fix it, then pytest -m release") == (
        "see why with <code>docker logs x &gt;&amp;2</code>; fix it, then "
        "<code>pytest -m release</code>"
    )
    assert step_html("nothing") == "nothing"


def _before(page: Page, first: str, then: str) -> bool:
    ids = [element.attrs.get("id") for element in page.body.find_all()]
    return ids.index(first) < ids.index(then)


@pytest.mark.docker
def test_a_failed_release_reads_as_a_post_mortem(chromium, deploy, make_service, tmp_path):
    v1_running_v2_merged(deploy, make_service, v2_health={"api": "error"}, timeout=2)
    run = engine.run(deploy.prod, "1234")
    assert run.rc == 1, run
    state = run.state
    page = Page.open(chromium, _report(run))

    top = page.body.find("section", "release")
    text = _flat(top.text())
    facts = _facts(top)
    assert _before(page, "release", "environment"), "the outcome first, pytest-html's table after"
    assert low_contrast(chromium, _report(run)) == [], "no text too faint to read"
    steps = top.find("ul", "next").find_all("li")
    commands = [[_flat(code.text()) for code in li.find_all("code")] for li in steps]
    assert len(commands) == 2 and all(len(c) == 1 for c in commands), commands
    resume, roll_back = commands[0][0], commands[1][0]
    assert resume.startswith("pytest -m release --ticket 1234") and "--from=migrate" in resume
    assert roll_back.startswith("pytest -m revert --ticket 1234")
    assert _flat(steps[1].text()).startswith("or roll back:")
    assert facts["ticket"] == "1234"
    assert facts["outcome"] == "FAILED in migrate on api"
    assert facts["stopped"] == "phase migrate, service api, step health (rc 1)"
    assert "--from=migrate" in facts["next command"]
    assert "pytest -m revert --ticket 1234" in facts["next command"]
    assert facts["BASE_SHA"] == state.base_sha and len(state.base_sha) == 40
    assert facts["MERGE_SHA"] == state.merge_sha and state.merge_sha != state.base_sha
    assert facts["SERVICES"] == "api web"
    assert facts["BACKUPS"] == " ".join(f"{s}={t}" for s, t in state.backups.items())
    assert set(state.backups) == {"api", "web"}
    # the commits between, by subject (the merge's subject carries quotes: escaped, not lost)
    assert "ticket 1234: services to tag 2" in text
    assert "Merge branch 'feature/1234'" in text
    assert "services at tag 1" not in text, "a commit before BASE_SHA is not listed"
    assert "did not become healthy" in text, "what failed, in the operator's words"

    phases = _phases(top)
    assert phases["prepare"][0] == "done" and DURATION.fullmatch(phases["prepare"][3])
    assert phases["migrate"][0] == "failed" and DURATION.fullmatch(phases["migrate"][3])
    assert phases["migrate"][1] == state.timestamps["MIGRATE_START"]
    assert phases["ticket"] == ["not run", "", "", ""]
    assert phases["verify"] == ["not run", "", "", ""]

    for line in run.state_path.read_text().splitlines():
        assert _flat(line) in text, f"state file line {line!r} not shown"
    for line in run.log_path.read_text().splitlines():
        assert _flat(line) in text, f"log line {line!r} not shown"
    assert "event=failed" in text

    not_run = _flat(top.find("ul", "not-run").text())
    assert f"test_migrate.py::test_migrate[web]: {HALTED}" in not_run
    assert f"test_verify.py::test_image[api]: {HALTED}" in not_run

    rows = _rows(page)
    api = rows["test_migrate.py::test_migrate[api]"]
    assert "failed" in api.attrs["class"]
    details = _flat(api.find("tr", "extras-row").text())  # visible: a failed row is open
    assert "compose up" in details
    assert "--no-deps --force-recreate" in details
    assert re.search(r"health probes time outcome latency \S+Z? got 500 \d+ ms", details), details
    assert "timed out after 2s: last probe got 500" in details
    # 2 s of the same 500 every 0.15 s: its first and last probe, and one line between.
    assert re.search(r"\.\.\. got 500 x\d+, [\d.]+ s apart \d+(-\d+)? ms", details), details
    assert len(re.findall(r"\S+Z? got 500 \d+ ms", details)) == 2, details
    assert "container logs of api (last 200 lines)" in details
    assert "health check failed: broken" in details, "the container's own log lines"

    skipped = [row for row_id, row in rows.items() if "skipped" in row.attrs["class"]]
    skipped_ids = {row.attrs["id"] for row in skipped}
    assert "test_migrate.py::test_migrate[web]::setup" in skipped_ids
    assert "test_ticket.py::test_ticket_scripts::setup" in skipped_ids
    assert "test_verify.py::test_health[web]::setup" in skipped_ids
    for row in skipped:
        log = _flat(row.find("div", "log").text())
        assert log.startswith(HALTED), "the reason alone, not pytest's (file, line, reason)"

    png = screenshot(chromium, page.path.resolve().as_uri(), tmp_path / "failed.png")
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000


@pytest.mark.docker
def test_a_complete_release_shows_each_image_expected_against_actual(
    chromium, deploy, make_service
):
    services = v1_running_v2_merged(deploy, make_service, ("api",))
    run = engine.run(deploy.prod, "1234")
    assert run.rc == 0, run
    page = Page.open(chromium, _report(run))

    top = page.body.find("section", "release")
    facts = _facts(top)
    assert facts["outcome"] == "COMPLETE"
    assert facts["stopped"] == "nowhere: it ran to the end"
    assert facts["next command"] == (
        f"nothing; to roll back this release: pytest -m revert --ticket 1234 "
        f"{engine.TEST_INI_TYPED}"
    )
    assert all(row[0] == "done" for row in _phases(top).values())
    assert "Steps not run" not in top.text()

    rows = _rows(page)
    image = rows["test_verify.py::test_image[api]"]
    assert "passed" in image.attrs["class"]
    # A passed row starts collapsed: its details are in the DOM, shown on a click.
    details = _flat(image.find("tr", "extras-row").text(visible=False))
    assert "image: expected against actual" in details
    expected = services["api"].image
    assert re.search(rf"expected {re.escape(expected)} = sha256:\w+", details), details
    assert re.search(rf"actual \S+ \(running\): {re.escape(expected)} = sha256:\w+", details)
    health = _flat(rows["test_verify.py::test_health[api]"].text(visible=False))
    assert "health probes" in health and "got 200" in health


@pytest.mark.docker
def test_a_container_that_printed_nothing_is_said_to_have_printed_nothing(
    chromium, deploy, make_service
):
    v1_running_v2_merged(deploy, make_service, ("api",), v2_health={"api": "silent"}, timeout=2)
    run = engine.run(deploy.prod, "1234")
    assert run.rc == 1, run
    page = Page.open(chromium, _report(run))
    top = _flat(page.body.find("section", "release").text())
    assert "read the container logs in the report" in top
    details = _flat(
        _rows(page)["test_migrate.py::test_migrate[api]"].find("tr", "extras-row").text()
    )
    logs = details.split("container logs of api (last 200 lines)", 1)[1]
    assert re.match(r" the container printed nothing \(\S+api-1 running\)", logs), logs
    assert "(empty)" not in details
