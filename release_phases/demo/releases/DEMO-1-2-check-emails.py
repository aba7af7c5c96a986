"""Ticket DEMO-1, script 2 of 2: check that every record of the database has an email.

Scripts of a ticket run in name order, so this one runs after the backfill. A
ticket script that exits non-zero fails the ticket phase; the release then stops
and names the revert. The environment it gets is described in releases/README.md.
"""

import os
import shlex
import subprocess
import sys

compose = shlex.split(os.environ.get("RELEASE_PHASES_COMPOSE") or "docker compose")
compose_file = os.path.join(os.environ["REPO_ROOT"], "packages", "db", "compose.yaml")
records = subprocess.run(
    [*compose, "-f", compose_file, "exec", "-T", "db", "cat", "/data/records.csv"],
    capture_output=True,
    text=True,
    check=True,
).stdout.splitlines()

without = [line for line in records if line.count(",") != 2 or not line.split(",")[2]]
if without:
    print(f"{len(without)} of {len(records)} records have no email: {without}")
    sys.exit(1)
print(f"ticket {os.environ['TICKET']}: all {len(records)} records have an email")
