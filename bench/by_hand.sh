#!/usr/bin/env bash
# The hand-written way to release: pull, then for each service recreate it on its new
# tag, wait until its health endpoint answers 200, and check the running image.
# usage: by_hand.sh REPO STOP_TIMEOUT SERVICE=ENDPOINT...
# RELEASE_PHASES_COMPOSE: the Compose v2 command, shell-quoted (bench/release.py passes
# the one the engine detects); `docker compose` when unset.
set -euo pipefail
eval "compose_cli=(${RELEASE_PHASES_COMPOSE:-docker compose})"
repo=$1 stop_timeout=$2
shift 2
cd "$repo"
git pull -q --ff-only
for pair in "$@"; do
    svc=${pair%%=*} endpoint=${pair#*=}
    compose=("${compose_cli[@]}" -f "packages/$svc/compose.yaml")
    "${compose[@]}" up -d --force-recreate --timeout "$stop_timeout" --quiet-pull 2>/dev/null
    until [ "$(curl -s -o /dev/null -w '%{http_code}' "$endpoint")" = 200 ]; do sleep 0.1; done
    want=$(docker image inspect -f '{{.Id}}' "$(grep -m1 'image:' "packages/$svc/compose.yaml" | awk '{print $2}')")
    for id in $("${compose[@]}" ps -q); do
        [ "$(docker inspect -f '{{.Image}}' "$id")" = "$want" ] || { echo "$svc runs the wrong image" >&2; exit 1; }
    done
done
