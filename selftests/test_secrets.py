"""Secrets in the environment and in env_files stay out of everything the engine shows
or keeps: the terminal, the log, the state file, the HTML report."""

from __future__ import annotations

import pytest

from selftests.support import composecli, engine
from selftests.support.scenario import running_on_prod

pytestmark = pytest.mark.docker

DB_PASSWORD = "hunter2-very-secret"
API_TOKEN = "tok-0123456789abcdef-e2e"

#: A careless ticket script: it traces its commands (`set -x`), prints both secrets, asks
#: the container what it was given (through `{compose}`, the Compose this host has), keeps
#: what it saw, and fails.
LEAKY_TICKET = """\
set -eux
echo "calling the API with $API_TOKEN"
. packages/api/db.env
echo "connecting with password $DB_PASSWORD"
{compose} -f packages/api/compose.yaml exec -T api /bin/busybox env | sort
printf '%s\\n' "$API_TOKEN" "$DB_PASSWORD" > .asd/seen-by-ticket
echo "migration failed for $DB_PASSWORD" >&2
exit 3
"""


@pytest.mark.reliability("bad input", "secrets in env and env_files are masked everywhere")
def test_secrets_in_env_and_env_files_are_masked_everywhere(deploy, make_service):
    api = running_on_prod(deploy, make_service, ("api",))["api"]
    # The env_file lives on the host only, as secrets do: never committed, ignored by git.
    with (deploy.prod / ".git/info/exclude").open("a") as exclude:
        exclude.write("packages/api/db.env\n")
    (deploy.prod / "packages/api/db.env").write_text(f"DB_PASSWORD={DB_PASSWORD}\n")
    api.tag = "2"
    make_service("api", "2")
    api.compose = {"env_file": ["db.env"], "environment": {"API_TOKEN": "${API_TOKEN}"}}
    deploy.write_service(api)
    deploy.write("releases/1234-leaky.sh", LEAKY_TICKET.format(compose=composecli.shell()))
    deploy.merge_feature("feature/1234", "ticket 1234: api to tag 2, with its secrets")

    run = engine.run(deploy.prod, "1234", env={"API_TOKEN": API_TOKEN})

    assert run.rc == 1, run
    failed = run.event("ticket", "failed")
    assert failed["rc"] == "3" and failed["step"] == "releases/1234-leaky.sh"
    # The script and the container ran with the real values; only what is shown is masked.
    seen = (deploy.prod / ".asd/seen-by-ticket").read_text().split()
    assert seen == [API_TOKEN, DB_PASSWORD]
    reports = list((deploy.prod / "reports").glob("1234-release-*.html"))
    assert len(reports) == 1, reports
    kept = {
        "terminal": run.output,
        "log": run.log_path.read_text(),
        "state file": run.state_path.read_text(),
        "report": reports[0].read_text(),
    }
    for where, text in kept.items():
        for secret in (API_TOKEN, DB_PASSWORD):
            assert secret not in text, f"{secret} in the {where}:\n{text}"
    # Where the output is quoted, the secrets are there as *** (the streamed output and
    # the failure's tail in the terminal; the step's output and the failure in the report).
    terminal = run.output
    assert "calling the API with ***" in terminal
    assert "connecting with password ***" in terminal
    assert "DB_PASSWORD=***" in terminal, "the container's env_file value, echoed"
    assert "API_TOKEN=***" in terminal
    assert "migration failed for ***" in terminal
    report = kept["report"]
    assert "connecting with password ***" in report
    assert "migration failed for ***" in report
