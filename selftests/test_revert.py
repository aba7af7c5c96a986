"""Revert for real: old code on origin, old data byte-identical, old containers healthy."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import signal
import subprocess
import sys
import tarfile
import threading
import time

import docker.errors
import docker.types
import httpx
import pytest

from release_phases import state as statefile
from release_phases.eventlog import parse_line
from selftests.conftest import RUN_ID
from selftests.support import engine
from selftests.support.images import LABEL
from selftests.support.scenario import container, up, v1_running_v2_merged

pytestmark = pytest.mark.docker


def _volume_files(container) -> str:
    code, out = container.exec_run(
        ["sh", "-c", 'cd /data/web-data && for f in *; do echo "$f:$(cat $f)"; done']
    )
    assert code == 0, out
    return out.decode()


@pytest.fixture
def released_with_data(deploy, make_service, docker_client):
    """web (with a volume holding data) and api released to tag 2; web's data then changed."""
    services = v1_running_v2_merged(deploy, make_service, volumes=("web-data",))
    web = services["web"]
    # (the api service declares the same volume key; only web's data is checked)
    before_data = "record.txt:precious\n"
    container(docker_client, web).exec_run(
        ["sh", "-c", "echo precious > /data/web-data/record.txt"]
    )
    # The release must back up what stood there before it: run it now.
    run = engine.run(deploy.prod, "1234")
    assert run.rc == 0, run
    # The new version "migrates" the data.
    container(docker_client, web).exec_run(
        ["sh", "-c", "echo migrated > /data/web-data/record.txt; echo new > /data/web-data/v2.txt"]
    )
    return services, run, before_data


def _origin_main(deploy) -> str:
    return deploy.dev_repo.git.ls_remote("origin", "refs/heads/main").split()[0]


def test_a_completed_release_is_reverted(deploy, released_with_data, docker_client):
    services, release_run, before_data = released_with_data
    base = release_run.state.base_sha
    run = engine.run(deploy.prod, "1234", mode="revert")
    assert run.rc == 0, run
    assert (run.state.phase, run.state.phase_status) == ("revert", "done")
    assert "ticket 1234: REVERTED" in run.output and "COMPLETE" not in run.output, run
    # The terminal says the data came back, not only the report.
    assert re.search(
        r"^web: volume web-data .*restored from 01-volume\S* and flushed to disk;"
        " checked: archived again, byte for byte the backup$",
        run.output,
        re.M,
    ), run
    # The restore step's log line says how long each part took.
    log = (deploy.prod / ".asd/workspace/releases/1234.log").read_text().splitlines()
    restored = [parse_line(line) for line in log if "step=test_restore" in line]
    web_step = next(e for e in restored if e.get("service") == "web" and e["event"] == "step")
    for part in ("set_aside", "fill", "check"):
        assert re.fullmatch(r"\d+\.\d\d", web_step[f"{part}_seconds"]), web_step
    for svc in services.values():
        running = container(docker_client, svc)
        assert running.status == "running"
        old = docker_client.images.get(f"{svc.repository}:1").id
        assert running.image.id == old
    assert _volume_files(container(docker_client, services["web"])) == before_data
    prod = deploy.prod_repo
    revert_sha = run.state.extra["REVERT_SHA"]
    assert _origin_main(deploy) == revert_sha == prod.head.commit.hexsha
    assert prod.git.rev_parse(f"{base}:packages") == prod.git.rev_parse("HEAD:packages")
    assert prod.head.commit.parents[0].hexsha == release_run.state.merge_sha
    assert run.event("revert", "done")
    assert "pytest -m revert" not in run.output.split("next:")[-1]
    assert prod.git.status("--porcelain", "--untracked-files=all") == ""


def test_a_release_that_failed_in_migrate_is_reverted(deploy, make_service, docker_client):
    services = v1_running_v2_merged(deploy, make_service, v2_health={"web": "error"}, timeout=2)
    failed = engine.run(deploy.prod, "1234")
    assert failed.event("migrate", "failed")["service"] == "web"
    run = engine.run(deploy.prod, "1234", mode="revert")
    assert run.rc == 0, run
    for svc in services.values():
        assert (
            container(docker_client, svc).image.id
            == docker_client.images.get(f"{svc.repository}:1").id
        )


def test_a_fast_forward_release_is_reverted_as_one_range_commit(
    deploy, make_service, docker_client
):
    web = make_service("web")
    deploy.write_service(web)
    deploy.commit("web at 1")
    deploy.push()
    deploy.clone_prod()
    base = deploy.prod_repo.head.commit.hexsha
    web.tag = "2"
    make_service("web", "2")
    deploy.write_service(web)
    deploy.commit("web to 2")
    deploy.write("packages/web/notes.txt", "second commit\n")
    deploy.commit("web notes")
    deploy.push()
    run = engine.run(deploy.prod, "1234")
    assert run.rc == 0, run
    reverted = engine.run(deploy.prod, "1234", mode="revert")
    assert reverted.rc == 0, reverted
    prod = deploy.prod_repo
    head = prod.head.commit
    assert len(head.parents) == 1 and "range" in head.message
    assert prod.git.rev_parse(f"{base}^{{tree}}") == prod.git.rev_parse("HEAD^{tree}")
    assert (
        container(docker_client, web).image.id == docker_client.images.get(f"{web.repository}:1").id
    )


def test_skip_git_and_skip_data(deploy, released_with_data, docker_client):
    services, release_run, _ = released_with_data
    head = deploy.prod_repo.head.commit.hexsha
    run = engine.run(deploy.prod, "1234", "--skip-git", "--skip-data", mode="revert")
    assert run.rc == 0, run
    assert deploy.prod_repo.head.commit.hexsha == head, "the code was left as it is"
    assert _origin_main(deploy) == release_run.state.merge_sha, "nothing was pushed"
    # data untouched: the post-release content is still there
    files = _volume_files(container(docker_client, services["web"]))
    assert "v2.txt:new" in files and "record.txt:migrated" in files
    assert "SKIPPED [1] revert test_revert_code: --skip-git: the code is left as it is" in (
        run.output
    ), run


def test_a_push_refused_keeps_the_local_revert_commit(deploy, released_with_data):
    deploy.write("unrelated.txt", "someone else pushed\n")
    deploy.commit("unrelated")
    deploy.push()
    run = engine.run(deploy.prod, "1234", mode="revert")
    assert run.rc == 1, run
    failed = run.event("revert", "failed")
    assert failed["step"] == "push"
    revert_sha = run.state.extra["REVERT_SHA"]
    assert deploy.prod_repo.head.commit.hexsha == revert_sha
    assert "pull --rebase" in run.output


def test_a_revert_killed_mid_restore_is_finished_by_a_rerun(
    deploy, released_with_data, docker_client
):
    services, _, before_data = released_with_data
    argv = [sys.executable, "-m", "pytest", "-m", "revert", "--ticket", "1234", *engine.TEST_INI]
    proc = subprocess.Popen(
        argv, cwd=deploy.prod, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    log = deploy.prod / ".asd/workspace/releases/1234.log"
    deadline = time.monotonic() + 60
    # kill -9 once the first service's restore step has begun
    while time.monotonic() < deadline:
        if log.exists() and "event=step step=test_revert_code" in log.read_text():
            break
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("the revert never reached its restore step")
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    env = (deploy.prod / ".asd/workspace/releases/1234.env").read_text()
    assert "PHASE=revert\nPHASE_STATUS=started" in env, "killed before it finished"
    run = engine.run(deploy.prod, "1234", mode="revert")
    assert run.rc == 0, run
    assert (run.state.phase, run.state.phase_status) == ("revert", "done")
    assert "took-over-stale" in log.read_text()
    assert _volume_files(container(docker_client, services["web"])) == before_data
    assert (
        len(
            [
                c
                for c in deploy.prod_repo.iter_commits("HEAD", max_count=5)
                if c.message.startswith("Revert ticket 1234")
            ]
        )
        == 1
    )


def test_revert_without_a_state_file_names_it(deploy):
    deploy.clone_prod()
    run = engine.run(deploy.prod, "77", mode="revert")
    assert run.rc == 4, run
    assert "77.env" in run.output


def test_a_dirty_worktree_is_refused_and_left_alone(deploy, make_service):
    v1_running_v2_merged(deploy, make_service, ("api",))
    assert engine.run(deploy.prod, "1234").rc == 0
    edited = deploy.prod / "packages/api/manifest.yaml"
    edited.write_text(edited.read_text() + "# an operator's edit\n")
    head = deploy.prod_repo.head.commit.hexsha
    run = engine.run(deploy.prod, "1234", mode="revert")
    assert run.rc == 1, run
    assert "not clean" in run.output and "packages/api/manifest.yaml" in run.output
    assert edited.read_text().endswith("# an operator's edit\n")
    assert deploy.prod_repo.head.commit.hexsha == head


def test_paths_inside_the_container_are_restored_too(deploy, make_service, docker_client):
    services = v1_running_v2_merged(deploy, make_service, ("web",), paths=("/data/state",))
    web = services["web"]
    container(docker_client, web).exec_run(
        ["sh", "-c", "mkdir -p /data/state && echo before > /data/state/f"]
    )
    assert engine.run(deploy.prod, "1234").rc == 0
    # the release recreated the container: its filesystem is the new image's
    container(docker_client, web).exec_run(
        ["sh", "-c", "mkdir -p /data/state && echo after > /data/state/f"]
    )
    run = engine.run(deploy.prod, "1234", mode="revert")
    assert run.rc == 0, run
    code, out = container(docker_client, web).exec_run(["cat", "/data/state/f"])
    assert (code, out) == (0, b"before\n")


def test_a_half_applied_revert_left_by_a_crash_is_redone(deploy, make_service):
    v1_running_v2_merged(deploy, make_service, ("api",))
    release = engine.run(deploy.prod, "1234")
    assert release.rc == 0, release
    # What a kill -9 between `git revert --no-commit` and its commit leaves behind.
    deploy.prod_repo.git.revert("--no-commit", "-m", "1", release.state.merge_sha)
    st = release.state
    st.begin("revert", "2026-11-27T00:00:00Z")
    statefile.write(release.state_path, st)
    run = engine.run(deploy.prod, "1234", mode="revert")
    assert run.rc == 0, run
    assert "dropped a revert left half-applied" in run.output or run.event("revert", "done")
    reverts = [
        c
        for c in deploy.prod_repo.iter_commits("HEAD", max_count=5)
        if c.message.startswith("Revert ticket 1234")
    ]
    assert len(reverts) == 1
    assert not deploy.prod_repo.is_dirty()


def test_a_rereleased_ticket_is_reverted_again_not_skipped(deploy, make_service, docker_client):
    services = v1_running_v2_merged(deploy, make_service, ("web",))
    web = services["web"]
    assert engine.run(deploy.prod, "1234").rc == 0
    assert engine.run(deploy.prod, "1234", mode="revert").rc == 0
    # The fix is merged under the same ticket and released again, at tag 3.
    deploy.dev_repo.git.pull("origin", "main")
    web.tag = "3"
    make_service("web", "3")
    deploy.write_service(web)
    deploy.merge_feature("feature/1234-fix", "ticket 1234: web to 3")
    again = engine.run(deploy.prod, "1234")
    assert again.rc == 0, again
    assert "REVERT_SHA" not in again.state_path.read_text()
    assert list((deploy.prod / ".asd/workspace/releases").glob("1234.env.*")), "old record kept"
    run = engine.run(deploy.prod, "1234", mode="revert")
    assert run.rc == 0, run
    # Back to what ran before the second release: tag 1, as the first revert left it.
    running = container(docker_client, web).image.id
    assert running == docker_client.images.get(f"{web.repository}:1").id
    assert deploy.prod_repo.head.commit.parents[0].hexsha == again.state.merge_sha


def test_a_reverted_release_cannot_be_resumed(deploy, make_service):
    v1_running_v2_merged(deploy, make_service, ("api",))
    assert engine.run(deploy.prod, "1234").rc == 0
    assert engine.run(deploy.prod, "1234", mode="revert").rc == 0
    for how in (("--from=verify",), ("-k", "verify")):
        run = engine.run(deploy.prod, "1234", *how)
        assert run.rc == 4, run
        assert "was reverted" in run.output


def test_a_service_the_release_added_is_removed(deploy, make_service, docker_client):
    v1_running_v2_merged(deploy, make_service, ("api",))
    extra = make_service("extra")
    deploy.dev_repo.git.pull("origin", "main")
    deploy.write_service(extra)
    deploy.merge_feature("feature/1234-extra", "ticket 1234: add extra")
    run = engine.run(deploy.prod, "1234")
    assert run.rc == 0, run
    assert run.state.services == ["api", "extra"]
    assert container(docker_client, extra).status == "running"
    reverted = engine.run(deploy.prod, "1234", mode="revert")
    assert reverted.rc == 0, reverted
    assert not docker_client.containers.list(
        all=True, filters={"label": f"com.docker.compose.project={extra.project}"}
    )
    assert not (deploy.prod / "packages/extra").exists()


def test_a_damaged_backup_fails_the_revert_before_anything_stops(
    deploy, released_with_data, docker_client
):
    services, release_run, _ = released_with_data
    stamp = release_run.state.backups["web"]
    backup_dir = deploy.prod / ".asd/workspace/backups/web" / stamp
    (archive,) = [p for p in backup_dir.iterdir() if p.suffix == ".tar"]
    archive.write_bytes(archive.read_bytes()[:-10] + b"0123456789")
    run = engine.run(deploy.prod, "1234", mode="revert")
    assert run.rc == 1, run
    assert archive.name in run.output
    failed = run.event("revert", "failed")
    assert failed["service"] == "web"
    # web comes first in reverse order: nothing of it was stopped, api not reached
    for svc in services.values():
        assert container(docker_client, svc).status == "running"
    assert (run.state.phase, run.state.phase_status) == ("revert", "failed")
    assert "pytest -m revert --ticket 1234" in run.output


# -- a service whose image holds nothing but one static binary ------------------------------

BINARY = bytes(range(256)) * 8


def _tar(files: dict[str, bytes]) -> bytes:
    """Directories (names ending in /) and files, as put_archive takes them."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name.rstrip("/"))
            if name.endswith("/"):
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            else:
                info.size, info.mode = len(data), 0o640
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _tree(box, path: str) -> dict[str, tuple[int, int, int, int, bytes]]:
    """What ``path`` holds in the container: each member's mode, owner, mtime and bytes,
    read through the API (the image has no cat or tar to read them with)."""
    chunks, _ = box.get_archive(path)
    tree = {}
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
        for m in tar:
            content = tar.extractfile(m) if m.isfile() else None
            tree[m.name] = (m.mode, m.uid, m.gid, int(m.mtime), content.read() if content else b"")
    return tree


def _remove(client, container_id: str) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        client.containers.get(container_id).remove(force=True)


@pytest.fixture
def bare_released(deploy, make_service, docker_client):
    """`static`, whose image is one static busybox, released from tag 1 to 2-bare; the
    release then changed the data in its volume and in a path of its container."""
    svc = make_service("static", health="bare", volumes=("static-data",), paths=("/srv/state",))
    # httpd serves /data: the service is healthy while its volume holds served.txt.
    svc.health = {"endpoint": f"http://127.0.0.1:{svc.port}/static-data/served.txt", "timeout": 20}
    deploy.write_service(svc)
    deploy.commit("static at 1")
    deploy.push()
    deploy.clone_prod()
    up(deploy, svc)
    v1 = container(docker_client, svc)
    code, said = v1.exec_run(["sh", "-c", "true"])
    assert code != 0 and b"executable file not found" in said, "the image has no shell"
    v1.put_archive(
        "/data/static-data",
        _tar({"served.txt": b"ok\n", "record.bin": BINARY, "sub/": b"", "sub/deep.txt": b"d\n"}),
    )
    # /srv is not in the image: the path lives in the container's own layer.
    v1.put_archive("/", _tar({"srv/": b"", "srv/state/": b"", "srv/state/f": b"before\n"}))
    before = (_tree(v1, "/data/static-data"), _tree(v1, "/srv/state"))
    svc.tag = "2-bare"
    make_service("static", "2-bare", "bare")
    deploy.write_service(svc)
    deploy.merge_feature("feature/1234", "ticket 1234: static to 2-bare")
    release = engine.run(deploy.prod, "1234")
    assert release.rc == 0, release
    v2 = container(docker_client, svc)
    v2.put_archive(
        "/data/static-data", _tar({"record.bin": b"migrated\n", "added-by-v2.txt": b"new\n"})
    )
    v2.put_archive("/", _tar({"srv/": b"", "srv/state/": b"", "srv/state/f": b"after\n"}))
    assert (_tree(v2, "/data/static-data"), _tree(v2, "/srv/state")) != before
    return svc, before


@pytest.mark.reliability(
    "fault", "a revert of a service whose image has no shell, rm or tar: one static binary"
)
def test_a_service_whose_image_is_one_static_binary_is_reverted_byte_for_byte(
    deploy, bare_released, docker_client
):
    svc, before = bare_released
    run = engine.run(deploy.prod, "1234", mode="revert")
    assert run.rc == 0, run
    assert (run.state.phase, run.state.phase_status) == ("revert", "done")
    reverted = container(docker_client, svc)
    assert reverted.status == "running"
    assert reverted.image.id == docker_client.images.get(f"{svc.repository}:1").id
    assert (_tree(reverted, "/data/static-data"), _tree(reverted, "/srv/state")) == before
    served = httpx.get(svc.health["endpoint"], timeout=10)  # type: ignore[index]
    assert (served.status_code, served.text) == (200, "ok\n")
    (report,) = deploy.prod.glob("reports/1234-revert-*.html")
    said = report.read_text()
    assert "volume static-data" in said and "removed and created again, restored from" in said
    assert "/srv/state: replaced in" in said and "(created /srv first)" in said


@pytest.mark.reliability(
    "fault", "a volume to restore is also held by another service's container: refused first"
)
def test_a_volume_another_container_holds_is_refused_before_anything_stops(
    deploy, bare_released, docker_client, request
):
    svc, before = bare_released
    volume = f"{svc.project}_static-data"
    # Not started: a stopped container holds a volume as firmly as a running one.
    other = docker_client.containers.create(
        f"{svc.repository}:1",
        name=f"{svc.project}-other",
        labels={LABEL: RUN_ID},
        mounts=[docker.types.Mount("/data", volume, type="volume")],
    )
    request.addfinalizer(lambda: _remove(docker_client, str(other.id)))
    v2 = container(docker_client, svc)
    changed = (_tree(v2, "/data/static-data"), _tree(v2, "/srv/state"))

    run = engine.run(deploy.prod, "1234", mode="revert")

    assert run.rc == 1, run
    failed = run.event("revert", "failed")
    assert (failed["service"], failed["step"]) == ("static", "restore")
    assert f"also held by {other.name}, not a container of static" in run.output
    assert "still running, nothing was stopped or restored" in run.output
    still = container(docker_client, svc)
    assert (still.id, still.status) == (v2.id, "running")
    assert (_tree(still, "/data/static-data"), _tree(still, "/srv/state")) == changed
    # The next command, followed as printed, and the revert run again finish it.
    (next_line,) = [line for line in run.output.splitlines() if line.startswith("next: ")]
    printed = re.findall(r"`(docker rm -f [^`]+)`", next_line)
    assert printed == [f"docker rm -f {other.name}"], next_line
    assert next_line.endswith(f"then pytest -m revert --ticket 1234 {engine.TEST_INI_TYPED}"), (
        next_line
    )
    (printed,) = printed
    subprocess.run(shlex.split(printed), check=True, capture_output=True)
    again = engine.run(deploy.prod, "1234", mode="revert")
    assert again.rc == 0, again
    reverted = container(docker_client, svc)
    assert (_tree(reverted, "/data/static-data"), _tree(reverted, "/srv/state")) == before


@pytest.mark.reliability(
    "fault",
    "a container takes the volume while the revert stops the service: the printed"
    " next command finishes it",
)
def test_a_volume_taken_while_the_service_stops_fails_the_restore_and_the_next_command_works(
    deploy, bare_released, docker_client, request
):
    svc, before = bare_released
    v2 = container(docker_client, svc)
    taken: list[str] = []
    # busybox httpd as PID 1 ignores SIGTERM, so `compose stop` waits its full second
    # (release_stop_timeout=1) after the kill event: the preflight has passed by then,
    # and the volume is taken before the restore looks at it again.
    events = docker_client.events(decode=True, filters={"container": v2.id, "event": "kill"})

    def take_the_volume() -> None:
        for _ in events:
            other = docker.from_env().containers.create(
                f"{svc.repository}:1",
                name=f"{svc.project}-late",
                labels={LABEL: RUN_ID},
                mounts=[docker.types.Mount("/data", f"{svc.project}_static-data", type="volume")],
            )
            taken.append(str(other.id))
            break
        events.close()

    request.addfinalizer(lambda: [_remove(docker_client, held) for held in taken])
    taker = threading.Thread(target=take_the_volume, daemon=True)
    taker.start()
    run = engine.run(deploy.prod, "1234", mode="revert")
    taker.join(timeout=30)
    events.close()  # ends the wait, should the service never have been stopped

    assert taken, "the service was never stopped"
    assert run.rc == 1, run
    failed = run.event("revert", "failed")
    assert (failed["service"], failed["step"]) == ("static", "restore")
    assert "static is stopped; the service and its data: nothing was restored" in run.output
    (next_line,) = [line for line in run.output.splitlines() if line.startswith("next: ")]
    printed = re.findall(r"`(docker rm -f [^`]+)`", next_line)
    assert printed == [f"docker rm -f {svc.project}-late"], next_line
    assert next_line.endswith(f"then pytest -m revert --ticket 1234 {engine.TEST_INI_TYPED}"), (
        next_line
    )
    subprocess.run(shlex.split(printed[0]), check=True, capture_output=True)
    again = engine.run(deploy.prod, "1234", mode="revert")
    assert again.rc == 0, again
    reverted = container(docker_client, svc)
    assert reverted.status == "running"
    assert (_tree(reverted, "/data/static-data"), _tree(reverted, "/srv/state")) == before
