"""A real database, released and reverted: PostgreSQL and a web app that reads it.

The deploy repo holds two packages: `db` (Debian's PostgreSQL; healthy by
`pg_isready` in the container and a TCP connection; backed up with pg_dump) and
`app` (a Python app built by the release from its package's Dockerfile; healthy by
Docker's own HEALTHCHECK from the compose file, and its endpoint). Ticket 1234
adds a column with a migration that its ticket script applies through
`docker exec ... psql`, and moves the app to v2, which reads the column. The
revert must bring back the app's v1 image and the database as it was, schema
included: its pg_dump after the revert equals the one taken before the release.
"""

from __future__ import annotations

import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from selftests.conftest import RUN_ID, remove_project
from selftests.support import composecli, engine
from selftests.support.debian import APP_PY
from selftests.support.deployrepo import DeployRepo, free_port
from selftests.support.images import LABEL

pytestmark = pytest.mark.docker

SEED = """
CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL);
INSERT INTO items (name) VALUES ('apple'), ('pear'), ('plum');
"""
MIGRATION = """
ALTER TABLE items ADD COLUMN note text;
UPDATE items SET note = 'note of ' || name;
INSERT INTO items (name, note) VALUES ('fig', 'added by 1234');
"""
#: Fails halfway: the column and the backfill are in (no transaction), then an error.
BROKEN_MIGRATION = """
ALTER TABLE items ADD COLUMN note text;
UPDATE items SET note = 'half';
SELECT 1 / 0;
"""
APP_HEALTHCHECK = {
    "test": [
        "CMD",
        "python3",
        "-c",
        "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/health', timeout=2)",
    ],
    "interval": "1s",
    "timeout": "3s",
    "retries": 60,
}


@dataclass
class Stack:
    deploy: DeployRepo
    db_project: str
    app_project: str
    db_port: int
    app_port: int
    network: str

    @property
    def db_container(self) -> str:
        return f"{self.db_project}-db-1"

    def psql(self, sql: str) -> str:
        return _run(
            ["docker", "exec", "-i", self.db_container, "psql", "-U", "app", "-v",
             "ON_ERROR_STOP=1", "-qAt", "app"],
            stdin=sql,
        )  # fmt: skip

    def pg_dump(self) -> str:
        """The whole database, schema and data (sequence values included), without the
        random key pg_dump puts in every dump (`\\restrict KEY` ... `\\unrestrict KEY`)."""
        dump = _run(["docker", "exec", self.db_container, "pg_dump", "-U", "app", "app"])
        return "".join(
            line
            for line in dump.splitlines(keepends=True)
            if not line.startswith(("\\restrict ", "\\unrestrict "))
        )

    def items(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.app_port}/items", timeout=10).text


def _run(argv: list[str], stdin: str | None = None, cwd: Path | None = None) -> str:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, cwd=cwd, check=False)
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout}{done.stderr}"
    return done.stdout


@pytest.fixture
def stack(deploy: DeployRepo, debian_images, docker_client):
    """v1 of db and app deployed on prod; removed with everything it made afterwards."""
    test_id = uuid.uuid4().hex[:6]
    s = Stack(
        deploy=deploy,
        db_project=f"rp{RUN_ID}-{test_id}-db",
        app_project=f"rp{RUN_ID}-{test_id}-app",
        db_port=free_port(),
        app_port=free_port(),
        network=f"rp{RUN_ID}-{test_id}-net",
    )
    # The two packages are two compose projects; they meet on a network made here.
    docker_client.networks.create(s.network, labels={LABEL: RUN_ID})
    _write_db(s, debian_images.postgres)
    _write_app(s, debian_images.python_app, version="v1", tag="1")
    deploy.commit("db and app at v1")
    deploy.push()
    deploy.clone_prod()
    for package in ("db", "app"):
        compose = deploy.prod / "packages" / package / "compose.yaml"
        _run(composecli.argv("-f", str(compose), "up", "-d", "--build", "--wait"))
    s.psql(SEED)
    yield s
    for project in (s.app_project, s.db_project):
        remove_project(docker_client, project)
    docker_client.networks.get(s.network).remove()
    for tag in ("1", "2", "3"):
        ref = f"rp{RUN_ID}-{test_id}/app:{tag}"
        if any(ref in image.tags for image in docker_client.images.list(name=ref)):
            docker_client.images.remove(ref, force=True)


def _write_db(s: Stack, image: str) -> None:
    name, tag = image.rsplit(":", 1)
    manifest = {
        "image": {"name": name, "tag": tag},
        "health": {
            "command": ["pg_isready", "-U", "app", "-d", "app"],
            "tcp": f"127.0.0.1:{s.db_port}",
            "timeout": 60,
        },
        "backup": {
            "dump": {
                "command": ["pg_dump", "-U", "app", "--clean", "--if-exists", "app"],
                "restore": ["psql", "-U", "app", "-v", "ON_ERROR_STOP=1", "-q", "app"],
            }
        },
    }
    compose = {
        "name": s.db_project,
        "services": {
            "db": {
                "image": image,
                "labels": {LABEL: RUN_ID},
                "ports": [f"127.0.0.1:{s.db_port}:5432"],
                "volumes": ["pgdata:/var/lib/postgresql/data"],
                "networks": {"shared": {"aliases": ["db"]}},
            }
        },
        "volumes": {"pgdata": {"labels": {LABEL: RUN_ID}}},
        "networks": {"shared": {"external": True, "name": s.network}},
    }
    _write_package(s.deploy, "db", manifest, compose)
    s.deploy.write("packages/db/migrations/001-items.sql", SEED)


def _write_app(s: Stack, base: str, *, version: str, tag: str) -> None:
    image = f"{s.app_project.removesuffix('-app')}/app"
    manifest = {
        "image": {"name": image, "tag": tag},
        "health": {
            "endpoint": f"http://127.0.0.1:{s.app_port}/health",
            "docker": True,
            "timeout": 60,
        },
    }
    compose = {
        "name": s.app_project,
        "services": {
            "app": {
                "build": {"context": ".", "labels": {LABEL: RUN_ID}},
                "image": f"{image}:{tag}",
                "labels": {LABEL: RUN_ID},
                "environment": {
                    "APP_VERSION": version,
                    "DATABASE_URL": "postgresql://app:app@db:5432/app",
                },
                "ports": [f"127.0.0.1:{s.app_port}:8080"],
                "healthcheck": APP_HEALTHCHECK,
                "networks": ["shared"],
                "stop_grace_period": "2s",
            }
        },
        "networks": {"shared": {"external": True, "name": s.network}},
    }
    _write_package(s.deploy, "app", manifest, compose)
    s.deploy.write(
        "packages/app/Dockerfile",
        f'FROM {base}\nCOPY app.py /app/app.py\nCMD ["python3", "/app/app.py"]\n',
    )
    s.deploy.write("packages/app/app.py", APP_PY.read_text())


def _write_package(deploy: DeployRepo, name: str, manifest: dict, compose: dict) -> None:
    deploy.write(f"packages/{name}/manifest.yaml", yaml.safe_dump(manifest, sort_keys=False))
    deploy.write(f"packages/{name}/compose.yaml", yaml.safe_dump(compose, sort_keys=False))


def _merge_ticket(s: Stack, base: str, migration: str) -> None:
    """Ticket 1234: the migration in the db package, its script, and the app at v2."""
    s.deploy.write("packages/db/migrations/002-note.sql", migration)
    _write_app(s, base, version="v2", tag="2")
    s.deploy.write(
        "releases/1234-add-note.sh",
        f"""\
        set -euo pipefail
        docker exec -i {s.db_container} psql -U app -v ON_ERROR_STOP=1 -q app \\
            < packages/db/migrations/002-note.sql
        echo "migration 002 applied"
        """,
    )
    s.deploy.merge_feature("feature/1234", "ticket 1234: items get a note")


def test_a_migrated_database_and_its_app_are_released_and_reverted(stack, debian_images):
    before = stack.pg_dump()
    assert stack.items() == "1\tapple\n2\tpear\n3\tplum\n"
    _merge_ticket(stack, debian_images.python_app, MIGRATION)

    released = engine.run(stack.deploy.prod, "1234")
    assert released.rc == 0, released
    assert released.state.services == ["app", "db"]
    assert stack.items() == (
        "1\tapple\tnote of apple\n2\tpear\tnote of pear\n3\tplum\tnote of plum\n"
        "4\tfig\tadded by 1234\n"
    )
    assert stack.pg_dump() != before
    migrated = [e for e in released.events if e["event"] == "step" and e["step"] == "test_migrate"]
    by_service = {e["service"]: e["health"] for e in migrated}
    assert by_service["db"].startswith("healthy by tcp, command"), by_service
    assert by_service["app"].startswith("healthy by endpoint, docker"), by_service

    reverted = engine.run(stack.deploy.prod, "1234", mode="revert")
    assert reverted.rc == 0, reverted
    assert stack.items() == "1\tapple\n2\tpear\n3\tplum\n", "the app is v1 again"
    assert stack.pg_dump() == before, "the database is as it was, schema and sequence included"


def test_a_migration_that_fails_halfway_halts_in_ticket_and_the_revert_restores(
    stack, debian_images
):
    before = stack.pg_dump()
    _merge_ticket(stack, debian_images.python_app, BROKEN_MIGRATION)

    released = engine.run(stack.deploy.prod, "1234")
    assert released.rc == 1, released
    assert "FAILED in ticket" in released.output
    assert "division by zero" in released.output
    assert stack.psql("SELECT count(*) FROM items WHERE note = 'half'") == "3\n", "half done"

    reverted = engine.run(stack.deploy.prod, "1234", mode="revert")
    assert reverted.rc == 0, reverted
    assert stack.pg_dump() == before
    assert stack.items() == "1\tapple\n2\tpear\n3\tplum\n"
