"""Phase 1 for real: a bare origin, clones, real containers and volumes."""

from __future__ import annotations

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from selftests.support import composecli, engine
from selftests.support.scenario import running_on_prod, up, web_on_prod

pytestmark = pytest.mark.docker


def _tree_snapshot(deploy) -> tuple[str, str, list[str]]:
    repo = deploy.prod_repo
    files = sorted(
        str(p.relative_to(deploy.prod)) for p in deploy.prod.rglob("*") if ".git" not in p.parts
    )
    return repo.head.commit.hexsha, repo.git.status("--porcelain"), files


@pytest.fixture
def two_services(deploy, make_service, docker_client):
    """Prod runs web and api at tag 1; origin has a merge moving both to tag 2."""
    web = make_service("web", volumes=("web-data",))
    api = make_service("api")
    for svc in (web, api):
        deploy.write_service(svc)
    deploy.commit("add web and api")
    deploy.push()
    deploy.clone_prod()
    for svc in (web, api):
        compose_file = deploy.prod / "packages" / svc.name / "compose.yaml"
        subprocess.run(
            composecli.argv("-f", str(compose_file), "up", "-d"),
            check=True,
            capture_output=True,
        )
    container = docker_client.containers.get(f"{web.project}-web-1")
    container.exec_run(["sh", "-c", "echo precious > /data/web-data/record.txt"])
    for svc in (web, api):
        svc.tag = "2"
        make_service(svc.name, "2")  # builds the tag-2 image
        deploy.write_service(svc)
    deploy.merge_feature("feature/1234", "move web and api to 2")
    return web, api


def test_full_prepare_on_a_two_service_change(deploy, two_services):
    base = deploy.prod_repo.head.commit.hexsha
    run = engine.run(deploy.prod, "1234")
    assert run.rc == 0, run
    state = run.state
    assert state.done("prepare"), run
    assert state.base_sha == base
    assert state.merge_sha == deploy.dev_repo.head.commit.hexsha
    assert len(state.merge_sha) == 40
    assert deploy.prod_repo.head.commit.hexsha == state.merge_sha
    assert state.services == ["api", "web"]
    assert set(state.backups) == {"api", "web"}
    for service, stamp in state.backups.items():
        backup_dir = deploy.prod / ".asd/workspace/backups" / service / stamp
        assert backup_dir.is_dir(), backup_dir
        assert re.fullmatch(r"\d{8}_\d{6}", stamp)
    sums = deploy.prod / ".asd/workspace/backups/web" / state.backups["web"] / "SHA256SUMS"
    assert sums.read_text().strip(), "the web volume's archive has a checksum"
    start = run.event("prepare", "start")
    done = run.event("prepare", "done")
    assert re.fullmatch(r"\d+s", done["duration"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", start["time"])
    assert run.event("migrate", "start")["services"] == "api web"
    # the state file is valid bash that reads back exactly
    out = subprocess.run(
        [
            "bash",
            "-c",
            f'source "{run.state_path}"; printf "%s|%s|%s" "$TICKET" "$SERVICES" "$BACKUPS"',
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == f"1234|api web|api={state.backups['api']} web={state.backups['web']}"
    assert list(deploy.prod.glob("reports/1234-release-*.html")), "a report was written"


def test_prepull_is_detected_and_base_sha_recovers(deploy, make_service):
    web_on_prod(deploy, make_service)
    before = deploy.prod_repo.head.commit.hexsha
    deploy.write("packages/web/notes.txt", "changed\n")
    deploy.merge_feature("feature/77", "touch web")
    deploy.prod_repo.git.pull("--ff-only", "origin", "main")  # the operator's mistake

    run = engine.run(deploy.prod, "77")
    assert run.rc != 0
    assert "nothing to release" in run.output
    assert "--base-sha" in run.output and "reflog" in run.output
    assert run.state.phase == "prepare" and run.state.phase_status == "failed"
    assert run.event("prepare", "failed")["rc"] == "1"

    run = engine.run(deploy.prod, "77", f"--base-sha={before}")
    assert run.state.done("prepare"), run
    assert run.state.base_sha == before
    assert run.state.services == ["web"]


def test_non_fast_forward_is_refused(deploy, make_service):
    web_on_prod(deploy, make_service)
    prod = deploy.prod_repo
    (deploy.prod / "local.txt").write_text("a commit only prod has\n")
    prod.index.add(["local.txt"])
    prod.index.commit("hand-made commit on prod")
    head = prod.head.commit.hexsha
    deploy.write("packages/web/notes.txt", "changed\n")
    deploy.merge_feature("feature/5", "touch web")

    run = engine.run(deploy.prod, "5")
    assert run.rc != 0
    assert "--ff-only" in run.output and "diverged" in run.output, run
    assert prod.head.commit.hexsha == head
    assert run.state.phase_status == "failed" and not run.state.merge_sha


def test_dirty_worktree_is_refused(deploy, make_service):
    web_on_prod(deploy, make_service)
    head = deploy.prod_repo.head.commit.hexsha
    (deploy.prod / "packages/web/manifest.yaml").write_text("edited on prod\n")
    deploy.write("packages/web/notes.txt", "changed\n")
    deploy.merge_feature("feature/6", "touch web")

    run = engine.run(deploy.prod, "6")
    assert run.rc != 0
    assert "not clean" in run.output and "packages/web/manifest.yaml" in run.output, run
    assert deploy.prod_repo.head.commit.hexsha == head


@pytest.mark.parametrize("ticket", ["../x", "1;rm -rf /", "", "x" * 65])
def test_bad_ticket_ids_are_refused_writing_nothing(deploy, ticket):
    deploy.clone_prod()
    before = _tree_snapshot(deploy)
    run = engine.run(deploy.prod, ticket)
    assert run.rc == 4, run  # pytest's usage error
    assert "--ticket" in run.output
    assert _tree_snapshot(deploy) == before


@pytest.mark.reliability(
    "bad input",
    "names that are shell commands (service dir, ticket, branch, --base-sha) run nothing",
)
def test_hostile_names_run_nothing(deploy, make_service, tmp_path):
    """No command is a string given to a shell: a name that is one runs nothing."""
    web_on_prod(deploy, make_service)
    hostile = "x;touch${IFS}pwned"
    deploy.write(f"packages/{hostile}/manifest.yaml", "image: {name: a, tag: '1'}\n")
    deploy.write(f"packages/{hostile}/compose.yaml", "services: {}\n")
    deploy.merge_feature("feature/7", "a package whose name is a shell command")
    run = engine.run(deploy.prod, "7")
    assert run.rc == 4, run
    assert "is not a service name" in run.output and hostile in run.output, run
    for ticket in ("1$(touch pwned)", "1`touch pwned`"):
        run = engine.run(deploy.prod, ticket)
        assert run.rc == 4 and "--ticket" in run.output, run
    run = engine.run(deploy.prod, "7", "--branch", "main;touch pwned", "--force-allow-non-main")
    assert run.rc == 4 and "is not a branch name" in run.output, run
    run = engine.run(deploy.prod, "7", "--base-sha", "$(touch pwned)")
    assert run.rc == 4 and "is not a commit sha" in run.output, run
    assert not list(deploy.root.rglob("pwned")), "a name was run as a command"
    assert not (deploy.prod / ".asd").exists(), "nothing was written"


def test_release_without_ticket_does_not_run(deploy):
    deploy.write("packages/web/manifest.yaml", "image: {name: web, tag: '1'}\n")
    deploy.commit("a service")
    deploy.push()
    deploy.clone_prod()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "release"],
        cwd=deploy.prod,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 4
    assert "--ticket is required" in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("manifest", "key"),
    [
        ("image: [unclosed\n", "not valid YAML"),
        ("image: {name: demo/web}\nhealth: {endpoint: 'http://127.0.0.1:1/h'}\n", "image.tag"),
        (
            "image: {name: demo/web, tag: '2'}\n"
            "health: {endpoint: 'http://127.0.0.1:1/h', timeout: soon}\n",
            "health.timeout",
        ),
        pytest.param(
            "image: {name: demo/web, tag: '2'}\n"
            "health: {endpoint: 'http://127.0.0.1:1/h'}\n"
            "backup: {volumes: [data], pahts: [/srv/data]}\n",
            "backup.pahts is not a known key; did you mean backup.paths?",
            marks=pytest.mark.reliability("bad input", "a misspelt backup key, end to end"),
            id="typo",
        ),
        pytest.param(
            b"image: {name: demo/w\xffeb, tag: '2'}\nhealth: {endpoint: 'http://127.0.0.1:1/h'}\n",
            "byte 20 is not UTF-8",
            marks=pytest.mark.reliability("bad input", "a manifest that is not UTF-8, end to end"),
            id="not-utf-8",
        ),
    ],
)
def test_malformed_manifests_are_refused_naming_file_and_key(deploy, make_service, manifest, key):
    web_on_prod(deploy, make_service)
    if isinstance(manifest, bytes):
        (deploy.dev / "packages/web/manifest.yaml").write_bytes(manifest)
    else:
        deploy.write("packages/web/manifest.yaml", manifest)
    deploy.merge_feature("feature/8", "break the manifest")
    before = _tree_snapshot(deploy)

    run = engine.run(deploy.prod, "8")
    assert run.rc == 4, run
    assert "packages/web/manifest.yaml" in run.output and key in run.output, run
    assert _tree_snapshot(deploy) == before


def test_collect_only_is_a_dry_run(deploy, two_services, docker_client):
    web, api = two_services
    before = _tree_snapshot(deploy)

    def ours():
        return {
            c.id: c.attrs["State"]["StartedAt"]
            for svc in (web, api)
            for c in docker_client.containers.list(
                all=True, filters={"label": f"com.docker.compose.project={svc.project}"}
            )
        }

    containers = ours()
    assert len(containers) == 2
    run = engine.run(deploy.prod, "1234", "--collect-only")
    assert run.rc == 0, run
    assert "services: api web" in run.output
    assert "test_migrate" in run.output
    assert _tree_snapshot(deploy) == before
    assert ours() == containers


HOLD_LOCK = """
import sys, time
from pathlib import Path
from release_phases import lock
lock.acquire(Path(sys.argv[1]), "other-1")
print("held", flush=True)
time.sleep(60)
"""


def test_a_held_lock_refuses_and_a_stale_one_is_taken_over(deploy, make_service):
    web_on_prod(deploy, make_service)
    deploy.write("packages/web/notes.txt", "changed\n")
    deploy.merge_feature("feature/9", "touch web")
    lock_path = deploy.prod / ".asd/workspace/releases/.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(lock_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        head = deploy.prod_repo.head.commit.hexsha
        run = engine.run(deploy.prod, "9")
        assert run.rc != 0
        assert "other-1" in run.output and str(holder.pid) in run.output, run
        assert deploy.prod_repo.head.commit.hexsha == head
        assert not run.state_path.exists()
    finally:
        holder.kill()  # kill -9: it dies holding the lock
        holder.wait()
    # the holder is dead now: its lock is stale
    run = engine.run(deploy.prod, "9")
    assert run.state.done("prepare"), run
    taken = run.event("prepare", "lock")
    assert taken["action"] == "took-over-stale" and "other-1" in taken["holder"]
    assert lock_path.read_text() == "", "the lock is released at the end"


def test_an_unreachable_docker_engine_stops_preflight_changing_nothing(deploy, make_service):
    web_on_prod(deploy, make_service)
    head = deploy.prod_repo.head.commit.hexsha
    deploy.write("packages/web/notes.txt", "changed\n")
    deploy.merge_feature("feature/10", "touch web")
    run = engine.run(deploy.prod, "10", env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert run.rc == 1, run
    assert "Docker Engine is not reachable" in run.output
    assert "nothing was pulled, backed up or restarted" in run.output
    assert deploy.prod_repo.head.commit.hexsha == head
    failed = run.event("prepare", "failed")
    assert failed["step"] == "test_preflight"
    assert not (deploy.prod / ".asd/workspace/backups").exists()


def test_a_release_that_adds_a_volume_backs_up_what_was_declared_before(
    deploy, make_service, docker_client
):
    web = make_service("web")
    deploy.write_service(web)
    deploy.commit("web without a volume")
    deploy.push()
    deploy.clone_prod()
    up(deploy, web)
    web.tag, web.volumes = "2", ("cache",)
    make_service("web", "2")
    deploy.write_service(web)
    deploy.merge_feature("feature/11", "web gets a cache volume")
    run = engine.run(deploy.prod, "11")
    assert run.rc == 0, run
    record = deploy.prod / ".asd/workspace/backups/web" / run.state.backups["web"]
    assert '"nothing_declared": true' in (record / "record.json").read_text()


@pytest.mark.reliability("fault", "two releases started in the same instant: exactly one runs")
def test_two_releases_started_together_one_runs_the_other_is_refused(deploy, make_service):
    """Exactly one runs: the lock, or the HEAD the winner moved, stops the other. (Their
    fetches collide only sometimes here; test_gitops holds a ref lock to test that.)"""
    running_on_prod(deploy, make_service, ("api", "web"))
    for round_ in range(3):
        tickets = (f"{round_}a", f"{round_}b")
        for ticket, service in zip(tickets, ("api", "web"), strict=True):
            deploy.write(f"packages/{service}/notes.txt", f"round {round_}\n")
            deploy.merge_feature(f"feature/{ticket}", f"ticket {ticket}: touch {service}")
        with ThreadPoolExecutor(max_workers=2) as pool:
            runs = list(pool.map(lambda t: engine.run(deploy.prod, t), tickets))
        won = [r for r in runs if r.rc == 0]
        lost = [r for r in runs if r.rc != 0]
        assert len(won) == 1 and len(lost) == 1, "\n\n".join(map(str, runs))
        assert "cannot lock ref" not in lost[0].output, lost[0]
        assert re.search(
            r"another release holds the lock|HEAD moved from \w+ to \w+ while this run was "
            r"being planned",
            lost[0].output,
        ), lost[0]
        assert won[0].state.phase == "verify" and won[0].state.phase_status == "done"


def test_a_service_the_release_removes_is_named_in_the_plan(deploy, make_service):
    running_on_prod(deploy, make_service, ("api", "web"))
    (deploy.dev / "packages/web/manifest.yaml").unlink()
    deploy.write("packages/api/notes.txt", "changed\n")
    deploy.merge_feature("feature/31", "ticket 31: web goes away")
    run = engine.run(deploy.prod, "31", "--collect-only")
    assert run.rc == 0, run
    assert "services: api" in run.output, run
    assert "removed by this release, left running (stop them by hand): web" in run.output


def test_backups_reports_state_and_log_are_readable_by_their_owner_only(deploy, two_services):
    run = engine.run(deploy.prod, "1234")
    assert run.rc == 0, run
    backups = deploy.prod / ".asd/workspace/backups"
    stamp_dir = backups / "web" / run.state.backups["web"]
    for directory in (backups, backups / "web", stamp_dir, deploy.prod / "reports"):
        assert directory.stat().st_mode & 0o777 == 0o700, directory
    files = [*stamp_dir.iterdir(), run.state_path, run.log_path]
    files += list((deploy.prod / "reports").glob("1234-release-*.html"))
    assert any(f.name.endswith(".tar") for f in files), files
    for path in files:
        assert path.stat().st_mode & 0o777 == 0o600, path


@pytest.mark.reliability("fault", "prepare stopped after its pull: a plain rerun resumes it")
def test_a_plain_rerun_resumes_a_prepare_that_stopped_after_its_pull(deploy, make_service):
    """The backup fails after the pull (a declared volume does not exist): once the cause
    is fixed, running the same command again goes on from BASE_SHA, and says so."""
    web = make_service("web")
    deploy.write_service(web, extra_manifest={"backup": {"volumes": ["data"]}})
    deploy.commit("web declares a volume its compose file lacks")
    deploy.push()
    deploy.clone_prod()
    up(deploy, web)
    base = deploy.prod_repo.head.commit.hexsha
    deploy.write("packages/web/notes.txt", "changed\n")
    deploy.merge_feature("feature/41", "touch web")

    failed = engine.run(deploy.prod, "41")
    assert failed.rc == 1, failed
    assert "volume 'data' does not exist" in failed.output, failed
    assert (failed.state.phase, failed.state.phase_status) == ("prepare", "failed")
    assert failed.state.base_sha == base and failed.state.merge_sha != base
    create = re.search(r"create it first: (docker volume create \S+ \S+ \S+)", failed.output)
    assert create, failed
    subprocess.run(create[1].split(), check=True, capture_output=True)  # the fix it names

    again = engine.run(deploy.prod, "41")
    assert again.rc == 0, again
    assert "resuming the prepare an earlier run left unfinished" in again.output, again
    assert again.state.base_sha == base, "BASE_SHA is the state file's, not HEAD"
    assert again.state.services == ["web"]
    assert (again.state.phase, again.state.phase_status) == ("verify", "done")


@pytest.mark.reliability("bad input", "a misspelt backup key already deployed, fixed by a release")
def test_a_release_that_fixes_a_misspelt_key_in_the_running_manifest(deploy, make_service):
    """Prod runs a manifest an older engine accepted (`backup.pahts`, ignored then); the
    release that corrects it to `paths` goes through, backs up what the fix declares
    and says why; the revert, back to the misspelt manifest, reads it the same way."""
    web = make_service("web")
    deploy.write_service(web, extra_manifest={"backup": {"pahts": ["/www"]}})
    deploy.commit("web, with a misspelt backup key")
    deploy.push()
    deploy.clone_prod()
    up(deploy, web)
    deploy.write_service(web, extra_manifest={"backup": {"paths": ["/www"]}})
    deploy.merge_feature("feature/42", "ticket 42: spell backup.paths right")

    run = engine.run(deploy.prod, "42")
    assert run.rc == 0, run
    assert "ignored=backup.pahts" in run.log_path.read_text()
    record = deploy.prod / ".asd/workspace/backups/web" / run.state.backups["web"]
    assert '"/www"' in (record / "record.json").read_text(), "the fix's paths were backed up"
    reverted = engine.run(deploy.prod, "42", mode="revert")
    assert reverted.rc == 0, reverted
    assert "pahts" in (deploy.prod / "packages/web/manifest.yaml").read_text()


def test_after_orders_services_and_an_unknown_name_is_refused(deploy, make_service):
    """`api` says `after: [web]`, so web is released first, though its name sorts last;
    then a merge whose `after:` names no service is refused, with nothing written."""
    services = running_on_prod(deploy, make_service, ("api", "web"))
    services["api"].tag = "2"
    make_service("api", "2")
    deploy.write_service(services["api"], extra_manifest={"after": ["web"]})
    services["web"].tag = "2"
    make_service("web", "2")
    deploy.write_service(services["web"])
    deploy.merge_feature("feature/51", "ticket 51: api after web")

    run = engine.run(deploy.prod, "51")
    assert run.rc == 0, run
    assert run.state.services == ["web", "api"]
    migrated = [e["service"] for e in run.events if e["phase"] == "migrate" and e.get("service")]
    assert migrated and migrated.index("web") < migrated.index("api"), migrated

    deploy.write_service(services["api"], extra_manifest={"after": ["wbe"]})
    deploy.merge_feature("feature/52", "ticket 52: a typo in after")
    refused = engine.run(deploy.prod, "52")
    assert refused.rc == 4, refused
    assert "after names wbe, which is no service" in refused.output, refused
    assert not refused.state_path.exists()
