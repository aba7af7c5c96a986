#!/bin/sh
# Runs as `postgres`: initialise an empty $PGDATA, then run the server in the foreground.
#   TCP, any address: user app / password app / database app, scram-sha-256.
#   Unix socket (docker exec): every user trusted; the superuser is `postgres`.
# The server starts listening only once initialisation is over, so `pg_isready`
# never reports a half-initialised database.
set -eu
: "${PGDATA:=/var/lib/postgresql/data}"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    chmod 0700 "$PGDATA"
    initdb --pgdata="$PGDATA" --username=postgres --encoding=UTF8 --locale=C.UTF-8 \
        --auth=trust >/dev/null
    cat >"$PGDATA/pg_hba.conf" <<'HBA'
# TYPE  DATABASE  USER  ADDRESS  METHOD
local   all       all            trust
host    all       all   all      scram-sha-256
HBA
    pg_ctl --pgdata="$PGDATA" --options="-c listen_addresses=''" --wait --silent start
    psql --quiet --no-psqlrc -v ON_ERROR_STOP=1 --username=postgres --dbname=postgres <<'SQL'
CREATE ROLE app LOGIN PASSWORD 'app';
CREATE DATABASE app OWNER app;
SQL
    pg_ctl --pgdata="$PGDATA" --mode=fast --wait --silent stop
    echo "postgres-entrypoint: initialised $PGDATA (user app, database app)" >&2
fi

exec postgres -D "$PGDATA" -c listen_addresses='*'
