"""pytest-dependency's shared-name gap, shown on plain pytest and closed by SharedNames."""

from __future__ import annotations

SHARED = """
import pytest

@pytest.mark.dependency(name="phase")
def test_first_check():
    assert False, "the first check fails"

@pytest.mark.dependency(name="phase")
def test_second_check():
    pass

@pytest.mark.dependency(depends=["phase"])
def test_next_phase():
    pass
"""

CLOSE_GAP = """
from release_phases.plugin import SharedNames

def pytest_configure(config):
    config.pluginmanager.register(SharedNames(), "shared-names")
"""


def test_without_the_fix_a_later_pass_hides_an_earlier_failure(pytester):
    pytester.makepyfile(test_shared=SHARED)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    # The gap itself: the dependent runs although a test of its dependency failed.
    result.assert_outcomes(failed=1, passed=2)


def test_shared_names_keep_the_first_failure(pytester):
    pytester.makepyfile(test_shared=SHARED)
    pytester.makeconftest(CLOSE_GAP)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(failed=1, passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*test_next_phase depends on phase*"])
