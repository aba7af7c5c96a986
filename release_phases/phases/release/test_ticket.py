"""Phase 3, ticket: the ticket's own migration, `releases/<ticket>-*.sh|.ts|.py`."""

import pytest

from release_phases import ticket
from release_phases.context import ReleaseContext
from release_phases.steps import Step

pytestmark = [
    pytest.mark.release,
    pytest.mark.phase("ticket"),
    pytest.mark.order(3),
]


def test_ticket_scripts(release: ReleaseContext, step: Step) -> None:
    ran = ticket.run_ticket_scripts(release, step)
    step.log_fields.update(script=" ".join(ran) or "none")
