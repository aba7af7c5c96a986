"""Halting goes through pytest-dependency: the plugin's marks, and nothing else, stop a run.

The release plugin registers `Halting`, which gives each step a dependency mark
derived from the run's steps. These tests run it on a toy run of three phases:
with the marks, a failure skips everything after it; with the marks taken away,
the very same failure halts nothing.
"""

from __future__ import annotations

import pytest

from release_phases.ledger import CHECK, ORDINARY, WAVE, dependencies

PHASE_MODULES = {
    # Named so that file order is not phase order: the chain follows the phases.
    "test_a_ticket": """
        import pytest
        pytestmark = [pytest.mark.phase("ticket"), pytest.mark.order(3)]

        def test_script():
            pass
    """,
    "test_b_migrate": """
        import pytest
        pytestmark = [pytest.mark.phase("migrate"), pytest.mark.order(2)]

        @pytest.mark.parametrize("service", ["api", "web"])
        def test_migrate(service):
            assert service != "api", "api did not become healthy"
    """,
    "test_c_prepare": """
        import pytest
        pytestmark = [pytest.mark.phase("prepare"), pytest.mark.order(1)]

        def test_pull():
            pass
    """,
    "test_d_verify": """
        import pytest
        pytestmark = [pytest.mark.phase("verify"), pytest.mark.check, pytest.mark.order(4)]

        def test_image():
            pass

        def test_health():
            pass
    """,
}

WITH_MARKS = """
from release_phases import PHASES
from release_phases.plugin import Halting

def pytest_configure(config):
    config.addinivalue_line("markers", "phase(name): a phase")
    config.addinivalue_line("markers", "check: a check")
    config.pluginmanager.register(Halting(PHASES), "halting")
"""

MARKS_TAKEN_AWAY = """
def pytest_configure(config):
    config.addinivalue_line("markers", "phase(name): a phase")
    config.addinivalue_line("markers", "check: a check")
"""


def _run(pytester: pytest.Pytester, conftest: str) -> pytest.RunResult:
    pytester.makepyfile(**{name: text for name, text in PHASE_MODULES.items()})
    pytester.makeconftest(conftest)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs", "-v")


def test_with_the_marks_a_failure_halts_every_later_step(pytester):
    result = _run(pytester, WITH_MARKS)
    result.assert_outcomes(passed=1, failed=1, skipped=4)
    result.stdout.fnmatch_lines(
        [
            "*test_c_prepare.py::test_pull PASSED*",
            "*test_b_migrate.py::test_migrate?api? FAILED*",
            "*test_b_migrate.py::test_migrate?web? SKIPPED*",
            "*test_a_ticket.py::test_script SKIPPED*",
            "*test_d_verify.py::test_image SKIPPED*",
            "*test_d_verify.py::test_health SKIPPED*",
        ]
    )
    # The skip is pytest-dependency's, naming the step that did not pass.
    result.stdout.fnmatch_lines(["*test_script depends on *test_migrate?web?*"])


def test_with_the_marks_taken_away_the_same_failure_halts_nothing(pytester):
    result = _run(pytester, MARKS_TAKEN_AWAY)
    result.assert_outcomes(passed=5, failed=1)


def test_a_failed_check_does_not_skip_the_other_checks(pytester):
    modules = dict(PHASE_MODULES)
    modules["test_d_verify"] = modules["test_d_verify"].replace(
        "def test_image():\n            pass", "def test_image():\n            assert False"
    )
    modules["test_b_migrate"] = modules["test_b_migrate"].replace('service != "api"', "True")
    pytester.makepyfile(**modules)
    pytester.makeconftest(WITH_MARKS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=5, failed=1)


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        ([], {}),
        ([("pull", ORDINARY)], {"pull": []}),
        (
            [
                ("pull", ORDINARY),
                ("up[api]", ORDINARY),
                ("up[web]", ORDINARY),
                ("script", ORDINARY),
            ],
            {"pull": [], "up[api]": ["pull"], "up[web]": ["up[api]"], "script": ["up[web]"]},
        ),
        # Every check depends on the last step before the checks, never on another check.
        (
            [("script", ORDINARY), ("image[api]", CHECK), ("health[api]", CHECK), ("e2e", CHECK)],
            {"script": [], "image[api]": ["script"], "health[api]": ["script"], "e2e": ["script"]},
        ),
        # A run that starts with checks (`-k verify`) has nothing before them in the run.
        ([("image", CHECK), ("health", CHECK)], {"image": [], "health": []}),
        # A wave's steps (--parallel) each depend on the step before the wave; the step
        # after it on all of them, and checks after it likewise.
        (
            [
                ("ready", ORDINARY),
                ("up[a]", WAVE),
                ("up[b]", WAVE),
                ("script", ORDINARY),
                ("h", CHECK),
            ],
            {
                "ready": [],
                "up[a]": ["ready"],
                "up[b]": ["ready"],
                "script": ["up[a]", "up[b]"],
                "h": ["script"],
            },
        ),
        (
            [("ready", ORDINARY), ("up[a]", WAVE), ("up[b]", WAVE), ("h", CHECK)],
            {"ready": [], "up[a]": ["ready"], "up[b]": ["ready"], "h": ["up[a]", "up[b]"]},
        ),
    ],
)
def test_the_chain_of_dependencies(steps, expected):
    assert dependencies(steps) == expected
