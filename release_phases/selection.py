"""Which release steps a run selects, and what must already be done for them.

pytest's `-k` matches substrings of every name on an item (module, directory,
parameters), so `-k verify` would also pick a migrate step of a service called
`verify-api`. Here a phase name in `-k` means that phase, any other word is
matched against the step's own name and parameters only. The expression parser
is pytest's own (`_pytest.mark.expression`), so the syntax is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

from _pytest.mark.expression import Expression

from release_phases import PHASES

#: Phases whose steps all run even after one fails (a complete picture).
COMPLETE_PICTURE = frozenset({"verify"})


def compile_keyword(expr: str) -> Expression:
    return Expression.compile(expr)


def only(name: str | None) -> Callable[..., bool]:
    """A matcher under which exactly marker `name` is present (None: no marker at all)."""

    def matcher(candidate: str, /, **_kwargs: object) -> bool:
        return candidate == name

    return matcher


def matches(expr: Expression, phase: str, words: Callable[[str], bool]) -> bool:
    """Does a step of `phase`, whose other names match `words`, satisfy `expr`?"""

    def matcher(name: str, /, **kwargs: object) -> bool:
        if name in PHASES:
            return name == phase
        return words(name)

    return expr.evaluate(matcher)


def start_phase(expr: Expression | None, from_phase: str | None) -> str:
    """The first phase this run will execute: from `--from`, else the first `-k` allows.

    A phase counts as allowed when some step of it could match, taking every
    non-phase word as matching (the plan does not know step names yet).
    """
    if from_phase:
        return from_phase
    if expr is None:
        return PHASES[0]
    for phase in PHASES:
        if matches(expr, phase, lambda _word: True) or matches(expr, phase, lambda _w: False):
            return phase
    return PHASES[0]


def check_contiguous(
    selected: dict[str, int], totals: dict[str, int], done: set[str]
) -> str | None:
    """A problem with the selected phases, or None.

    `selected`/`totals` count steps per phase. Every phase before the first
    selected one must be done; the selected phases must follow each other; a
    halting phase must be selected whole (only verify's checks can be picked).
    """
    chosen = [p for p in PHASES if selected.get(p)]
    if not chosen:
        return None
    first = PHASES.index(chosen[0])
    for phase in PHASES[:first]:
        if phase not in done:
            return f"the selected steps need phase {phase} done first; the state file says not"
    last = PHASES.index(chosen[-1])
    for phase in PHASES[first : last + 1]:
        if totals.get(phase) and not selected.get(phase):
            return f"the selection skips phase {phase} between {chosen[0]} and {chosen[-1]}"
        if phase not in COMPLETE_PICTURE and selected.get(phase, 0) < totals.get(phase, 0):
            return f"phase {phase} can only run whole, but the selection picks part of it"
    return None
