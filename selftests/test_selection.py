"""The phase-aware -k and the selection rules, as pure logic."""

from __future__ import annotations

import pytest

from release_phases import selection


def _match(expr: str, phase: str, name: str) -> bool:
    return selection.matches(selection.compile_keyword(expr), phase, lambda w: w in name)


def test_a_phase_word_means_that_phase_not_a_substring():
    # pytest alone would pick this migrate step: its service is called verify-api.
    assert not _match("verify", "migrate", "test_migrate[verify-api]")
    assert _match("verify", "verify", "test_health[web]")
    assert _match("verify and web", "verify", "test_health[web]")
    assert not _match("verify and web", "verify", "test_health[api]")
    assert _match("not prepare", "ticket", "test_ticket_scripts")


@pytest.mark.parametrize(
    ("expr", "from_phase", "start"),
    [
        (None, None, "prepare"),
        ("verify", None, "verify"),
        ("not prepare", None, "migrate"),
        ("web", None, "prepare"),
        (None, "ticket", "ticket"),
    ],
)
def test_start_phase(expr, from_phase, start):
    compiled = selection.compile_keyword(expr) if expr else None
    assert selection.start_phase(compiled, from_phase) == start


TOTALS = {"prepare": 4, "migrate": 2, "ticket": 1, "verify": 4}


@pytest.mark.parametrize(
    ("selected", "done", "problem"),
    [
        (TOTALS, set(), None),
        ({"verify": 4}, {"prepare", "migrate", "ticket"}, None),
        ({"verify": 1}, {"prepare", "migrate", "ticket"}, None),
        ({"verify": 4}, {"prepare", "migrate"}, "phase ticket done first"),
        ({"migrate": 1, "ticket": 1, "verify": 4}, {"prepare"}, "only run whole"),
        ({"prepare": 4, "verify": 4}, set(), "skips phase migrate"),
    ],
)
def test_check_contiguous(selected, done, problem):
    found = selection.check_contiguous(selected, TOTALS, done)
    if problem is None:
        assert found is None
    else:
        assert problem in found
