"""Phase 3, ticket: the ticket's own migration, `releases/<ticket>-*.sh|.ts|.py`."""

import pytest

from release_phases import ticket

pytestmark = [
    pytest.mark.release,
    pytest.mark.phase("ticket"),
    pytest.mark.order(3),
    pytest.mark.dependency(name="ticket", depends=["migrate"], scope="session"),
]


def test_ticket_scripts(release, step):
    ran = ticket.run_ticket_scripts(release, step)
    step.log_fields.update(script=" ".join(ran) or "none")
