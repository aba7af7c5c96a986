"""What one release step hands back: facts for the state file, details for the report."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from release_phases import state


@dataclass
class Step:
    """Filled in by a step through its `step` fixture; the plugin reads it after the step."""

    phase: str
    name: str
    service: str | None = None
    #: State keys this step established (BASE_SHA, SERVICES, ...); the plugin writes them.
    facts: dict[str, str] = field(default_factory=dict)
    #: service -> backup stamp, merged into BACKUPS.
    backups: dict[str, str] = field(default_factory=dict)
    #: service (or service/compose-service) -> image id, merged into IMAGES.
    images: dict[str, str] = field(default_factory=dict)
    #: Extra `key=value` fields for this step's log line.
    log_fields: dict[str, str] = field(default_factory=dict)
    #: (title, text) sections shown with this step in the HTML report.
    details: list[tuple[str, str]] = field(default_factory=list)

    def record(self, **facts: str) -> None:
        # The state file's reader refuses keys it does not know: a fact under any other
        # name would be written, then make the file unreadable for the next run.
        unknown = sorted(set(facts) - state.KNOWN_KEYS)
        if unknown:
            raise ValueError(f"{', '.join(unknown)}: not keys of the state file (state.py)")
        self.facts.update(facts)

    def detail(self, title: str, text: str) -> None:
        self.details.append((title, text))


#: Where a step item keeps its `Step`, for the plugin and the report.
STEP = pytest.StashKey[Step]()
