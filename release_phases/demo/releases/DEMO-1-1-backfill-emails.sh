#!/usr/bin/env bash
# Ticket DEMO-1, script 1 of 2: give every record of the demo's database an email.
#
# Version 2 of the database added an empty email column to its records when it
# started (in migrate); this fills it in, now that version 2 runs. The engine runs
# it in the ticket phase, in the deploy repository, with the release described in
# its environment (releases/README.md).
set -euo pipefail

echo "ticket ${TICKET}: ${BASE_SHA:0:7}..${MERGE_SHA:0:7}, services released: ${SERVICES}"

# The Compose the engine drives: RELEASE_PHASES_COMPOSE when it is set.
read -r -a compose <<< "${RELEASE_PHASES_COMPOSE:-docker compose}"
db=("${compose[@]}" -f "${REPO_ROOT}/packages/db/compose.yaml")

# Only a record whose email is empty is changed: run again, it changes nothing.
"${db[@]}" exec -T db sh -c '
    sed "s/^\([^,]*\),\([^,]*\),\$/\1,\2,\2@example.invalid/" /data/records.csv > /data/records.new
    mv /data/records.new /data/records.csv
'
echo "records now:"
"${db[@]}" exec -T db cat /data/records.csv
