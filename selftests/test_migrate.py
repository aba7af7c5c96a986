"""Phases 2 and 3 for real: containers recreated, health polled, hooks and ticket scripts."""

from __future__ import annotations

import time

import pytest

from selftests.support import engine
from selftests.support.scenario import container, v1_running_v2_merged

pytestmark = pytest.mark.docker


def test_a_release_moves_both_services_to_the_new_image(deploy, make_service, docker_client):
    services = v1_running_v2_merged(deploy, make_service)
    run = engine.run(deploy.prod, "1234", "-s")  # -s: what the engine streams, uncaptured
    assert run.state.done("migrate"), run
    # Compose prints nothing while a container takes its time to stop: the engine says
    # first what it waits for.
    said = "web: recreating its containers; running ones are stopped first, up to 1 s each"
    recreating = f"{services['web'].project}-web-1  Recreate\n"
    assert -1 < run.output.find(said) < run.output.find(recreating), run
    for svc in services.values():
        running = container(docker_client, svc)
        assert running.status == "running"
        assert running.image.id == docker_client.images.get(svc.image).id
        assert svc.image.endswith(":2")
    done = run.event("migrate", "done")
    assert done["duration"].endswith("s")
    steps = [e for e in run.events if e["phase"] == "migrate" and e["event"] == "step"]
    assert [(e["step"], e.get("service")) for e in steps] == [
        ("test_ready", None),
        ("test_migrate", "api"),
        ("test_migrate", "web"),
    ]
    # The backups, the state file, the log and the report: none of it for git to list.
    assert (deploy.prod / "reports").is_dir() and (deploy.prod / ".asd").is_dir()
    assert deploy.prod_repo.git.status("--porcelain", "--untracked-files=all") == ""


def test_a_500_halts_at_that_service_and_leaves_later_ones_untouched(
    deploy, make_service, docker_client
):
    services = v1_running_v2_merged(deploy, make_service, v2_health={"api": "error"}, timeout=3)
    web_before = container(docker_client, services["web"]).id
    run = engine.run(deploy.prod, "1234")
    assert run.rc == 1, run
    failed = run.event("migrate", "failed")
    assert failed["service"] == "api" and failed["step"] == "health" and failed["rc"] == "1"
    assert run.state.phase == "migrate" and run.state.phase_status == "failed"
    assert "TIMESTAMP_MIGRATE_FAILED" in run.state_path.read_text()
    web = container(docker_client, services["web"])
    assert web.id == web_before, "web was not touched"
    assert web.image.id == docker_client.images.get(services["web"].repository + ":1").id
    assert "release halted: migrate failed on api" in run.output
    # Each skip line names the step it skipped, not a line of the engine's code.
    skipped = [line for line in run.output.splitlines() if line.startswith("SKIPPED")]
    halted = "release halted: migrate failed on api"
    assert skipped[0] == f"SKIPPED [1] migrate test_migrate[web]: {halted}", skipped
    assert len(skipped) == 6 and not any(".py" in line for line in skipped), skipped
    assert "got 500" in run.output, run.output
    assert "--from=migrate" in run.output and "pytest -m revert --ticket 1234" in run.output


def test_a_silent_container_halts_at_the_health_timeout(deploy, make_service):
    v1_running_v2_merged(deploy, make_service, ("api",), v2_health={"api": "silent"}, timeout=3)
    started = time.monotonic()
    run = engine.run(deploy.prod, "1234")
    assert run.rc == 1, run
    assert "timed out after 3s" in run.output, run
    failed = run.event("migrate", "failed")
    assert failed["step"] == "health"
    # the whole run: prepare, recreate, 3 s of probes and the report; not minutes
    assert int(failed["duration"].rstrip("s")) < 3 + 15
    assert time.monotonic() - started < 120


def test_a_missing_image_fails_before_any_container_is_touched(deploy, make_service, docker_client):
    services = v1_running_v2_merged(deploy, make_service, v2_tag={"web": "missing"})
    before = {n: container(docker_client, s).id for n, s in services.items()}
    run = engine.run(deploy.prod, "1234")
    assert run.rc == 1, run
    assert services["web"].repository + ":missing" in run.output
    failed = run.event("migrate", "failed")
    assert failed["step"] == "images"
    after = {n: container(docker_client, s).id for n, s in services.items()}
    assert after == before, "neither api nor web was recreated"


HOOK_SH = """\
#!/usr/bin/env bash
echo "pre $SERVICE $TICKET $(pwd) ${SERVICES// /,}" >> "$REPO_ROOT/.asd/hooks.log"
"""
HOOK_PY = """\
import os
with open(os.path.join(os.environ["REPO_ROOT"], ".asd", "hooks.log"), "a") as fh:
    fh.write(f"post {os.environ['SERVICE']} {os.environ['MERGE_SHA'][:7]}\\n")
"""
HOOK_TS = """\
const root: string = Deno.env.get("REPO_ROOT") ?? "";
const line: string = `ensure ${Deno.env.get("SERVICE")} ${Deno.env.get("CONTAINER_PREFIX")}\\n`;
Deno.writeTextFileSync(`${root}/.asd/hooks.log`, line, { append: true });
"""


def test_hooks_run_in_order_with_the_documented_environment(deploy, make_service):
    v1_running_v2_merged(
        deploy,
        make_service,
        ("api",),
        files={
            "packages/api/pre_start_init.sh": HOOK_SH,
            "packages/api/post_start_init.py": HOOK_PY,
            "packages/api/ensure-config.ts": HOOK_TS,
        },
    )
    run = engine.run(deploy.prod, "1234")
    assert run.state.done("migrate"), run
    merge = run.state.merge_sha
    lines = (deploy.prod / ".asd/hooks.log").read_text().splitlines()
    assert lines == [
        f"pre api 1234 {deploy.prod} api",
        f"post api {merge[:7]}",
        "ensure api ",
    ]


def test_a_failing_hook_halts_the_phase(deploy, make_service, docker_client):
    services = v1_running_v2_merged(
        deploy,
        make_service,
        files={"packages/api/pre_start_init.sh": "echo 'cannot migrate the schema' >&2\nexit 3\n"},
    )
    before = container(docker_client, services["api"]).id
    run = engine.run(deploy.prod, "1234")
    assert run.rc == 1, run
    failed = run.event("migrate", "failed")
    assert failed == {**failed, "rc": "3", "service": "api", "step": "pre_start_init"}
    assert "cannot migrate the schema" in run.output
    assert container(docker_client, services["api"]).id == before, "api was not recreated"


TICKET_SH = 'echo "sh $TICKET $SERVICES" >> .asd/ticket.log\n'
TICKET_PY = """\
import os
with open(".asd/ticket.log", "a") as fh:
    fh.write(f"py {os.environ['TICKET']} {os.environ['BASE_SHA'][:7]}\\n")
"""
TICKET_TS = """\
const t: string = Deno.env.get("TICKET") ?? "?";
Deno.writeTextFileSync(".asd/ticket.log", `ts ${t}\\n`, { append: true });
"""


def test_ticket_scripts_of_each_kind_run_in_name_order(deploy, make_service):
    v1_running_v2_merged(
        deploy,
        make_service,
        ("api",),
        files={
            "releases/1234-a-first.sh": TICKET_SH,
            "releases/1234-b-second.py": TICKET_PY,
            "releases/1234-c-third.ts": TICKET_TS,
            "releases/12345-not-ours.sh": "exit 1\n",
        },
    )
    run = engine.run(deploy.prod, "1234")
    assert run.state.done("ticket"), run
    base = run.state.base_sha
    assert (deploy.prod / ".asd/ticket.log").read_text().splitlines() == [
        "sh 1234 api",
        f"py 1234 {base[:7]}",
        "ts 1234",
    ]
    start = run.event("ticket", "start")
    assert start["script"] == (
        "releases/1234-a-first.sh releases/1234-b-second.py releases/1234-c-third.ts"
    )
    assert run.event("ticket", "done")


def test_a_failing_ticket_script_halts_before_verify(deploy, make_service):
    v1_running_v2_merged(
        deploy, make_service, ("api",), files={"releases/1234-reindex.sh": "exit 4\n"}
    )
    run = engine.run(deploy.prod, "1234")
    assert run.rc == 1, run
    failed = run.event("ticket", "failed")
    assert failed["rc"] == "4" and failed["step"] == "releases/1234-reindex.sh"
    assert not any(e["phase"] == "verify" for e in run.events)
    assert "release halted: ticket failed" in run.output


def test_from_migrate_resumes_with_the_state_files_services(
    deploy, make_service, images, docker_client
):
    services = v1_running_v2_merged(
        deploy,
        make_service,
        v2_health={"api": "error"},
        v2_tag={"api": "2-fixable"},  # this test alone rebuilds it
        timeout=3,
    )
    first = engine.run(deploy.prod, "1234")
    seen = len(first.events)
    assert first.event("migrate", "failed")["service"] == "api"
    backups = first.state.backups
    # The fix: the image behind api's tag is rebuilt healthy on the host.
    images.get("api", services["api"].tag, "ok", rebuild=True)
    run = engine.run(deploy.prod, "1234", "--from=migrate")
    assert run.state.done("migrate"), run
    assert run.state.services == ["api", "web"]
    assert run.state.backups == backups, "no new backup was taken"
    assert not [e for e in run.events[seen:] if e["phase"] == "prepare"]
    for svc in services.values():
        assert container(docker_client, svc).image.id == docker_client.images.get(svc.image).id


def test_a_ticket_script_only_release_runs_every_phase_and_completes(deploy):
    deploy.clone_prod()
    deploy.write("releases/1234-reindex.sh", "echo reindexed > .asd/reindexed\n")
    deploy.merge_feature("feature/1234", "ticket 1234: reindex only")
    run = engine.run(deploy.prod, "1234")
    assert run.rc == 0, run
    assert (run.state.phase, run.state.phase_status) == ("verify", "done")
    assert run.state.services == []
    for phase in ("prepare", "migrate", "ticket", "verify"):
        assert run.event(phase, "done"), phase
    assert (deploy.prod / ".asd/reindexed").read_text() == "reindexed\n"
    assert "ticket 1234: COMPLETE" in run.output


def test_a_first_deployment_on_a_new_host_with_the_commit_before_the_service(
    deploy, make_service, docker_client
):
    """README's "First deployment on a new host": a fresh clone already holds web, so
    nothing changed since HEAD; named as the BASE_SHA, the commit before web was
    added makes web a service of the release, deployed from nothing."""
    before = deploy.dev_repo.head.commit.hexsha
    web = make_service("web", volumes=("web-data",))
    deploy.write_service(web)
    deploy.commit("add web")
    deploy.push()
    deploy.clone_prod()
    plain = engine.run(deploy.prod, "1")
    assert plain.rc != 0 and "nothing to release" in plain.output, plain
    run = engine.run(deploy.prod, "1", "--base-sha", before)
    assert run.rc == 0, run
    assert run.state.services == ["web"]
    assert not run.state.extra.get("IMAGES"), "nothing ran before: no image to go back to"
    running = container(docker_client, web)
    assert running.status == "running"
    assert running.image.id == docker_client.images.get(web.image).id
