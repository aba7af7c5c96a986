"""The order services are released in: `after:`, then the name."""

from __future__ import annotations

import pytest

from release_phases.errors import ConfigError
from release_phases.plan import release_order


@pytest.mark.parametrize(
    ("after", "order"),
    [
        ({"web": [], "api": [], "db": []}, ["api", "db", "web"]),
        ({"web": ["db", "cache"], "cache": ["db"], "db": []}, ["db", "cache", "web"]),
        # Only services of this release order it: `zzz` is not in it.
        ({"api": ["zzz"], "web": []}, ["api", "web"]),
        ({"b": ["a"], "a": [], "c": []}, ["a", "b", "c"]),
        ({"a": ["a"]}, ["a"]),
    ],
)
def test_after_orders_the_release_and_the_name_breaks_ties(after, order):
    assert release_order(after) == order


@pytest.mark.reliability("bad input", "services whose after: make a cycle")
def test_a_cycle_is_refused_naming_it():
    with pytest.raises(ConfigError, match=r"a cycle: a -> b -> c -> a") as refused:
        release_order({"a": ["b"], "b": ["c"], "c": ["a"], "d": []})
    assert "remove one of those `after:`" in str(refused.value)
