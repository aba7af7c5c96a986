"""A tiny web app for the selftests that release a real database (stdlib + psycopg2 only).

GET /health  200 "ok" when `SELECT 1` works, else 503 with the error.
GET /items   the rows of table `items`, one per line, tab-separated, ordered by id:
             v1: "id<TAB>name"; v2: "id<TAB>name<TAB>note" (the column a migration adds;
             NULL prints as "NULL"). If the query fails: 500 with the error.
The schema version is APP_VERSION from the environment, else DEFAULT_VERSION below (a test
may rewrite that one line to "v2"). The database is DATABASE_URL (a libpq URI or key=value
string), else libpq's own PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE. Port: PORT, else 8080.
"""

import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg2

DEFAULT_VERSION = "v1"
VERSION = os.environ.get("APP_VERSION", DEFAULT_VERSION)
QUERIES = {
    "v1": "SELECT id, name FROM items ORDER BY id",
    "v2": "SELECT id, name, note FROM items ORDER BY id",
}


def query(sql):
    conn = psycopg2.connect(os.environ.get("DATABASE_URL", ""), connect_timeout=3)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    finally:
        conn.close()


def cell(value):
    return "NULL" if value is None else str(value)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        try:
            if self.path == "/health":
                query("SELECT 1")
                self.reply(200, "ok\n")
            elif self.path == "/items":
                rows = query(QUERIES[VERSION])
                self.reply(200, "".join("\t".join(map(cell, row)) + "\n" for row in rows))
            else:
                self.reply(404, "not found\n")
        except psycopg2.Error as exc:
            self.reply(503 if self.path == "/health" else 500, f"{type(exc).__name__}: {exc}\n")

    def reply(self, code, body):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


if __name__ == "__main__":
    if VERSION not in QUERIES:
        sys.exit(f"APP_VERSION must be one of {sorted(QUERIES)}, not {VERSION!r}")
    # PID 1 in a container ignores SIGTERM unless it handles it: stop at once.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8080"))), Handler)
    print(f"app {VERSION} listening on {server.server_address[1]}", file=sys.stderr)
    server.serve_forever()
