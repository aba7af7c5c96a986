"""UTC timestamps in the two shapes the engine writes."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime | None = None) -> str:
    """`2026-05-18T15:29:00Z`: the state file's and the log's time format."""
    return (moment or now()).strftime("%Y-%m-%dT%H:%M:%SZ")


def stamp(moment: datetime | None = None) -> str:
    """`20260518_153012`: a backup directory's and a report's name."""
    return (moment or now()).strftime("%Y%m%d_%H%M%S")


def parse_iso(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
