"""The hotfix lifecycle: release a branch, then return to main once it is merged."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from selftests.conftest import REPO_ROOT
from selftests.support import engine
from selftests.support.scenario import running_on_prod

pytestmark = pytest.mark.docker


def _just(deploy, *args: str) -> subprocess.CompletedProcess:
    # Beside this Python first: .ci/setup installs just into .venv/bin, which need not
    # be on PATH (the suite runs as `.venv/bin/python -m pytest`).
    here = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    just = shutil.which("just", path=here)
    assert just, "just is installed by .ci/setup (PyPI rust-just)"
    return subprocess.run(
        [just, "-f", str(REPO_ROOT / "justfile"), *args, *engine.TEST_INI],
        cwd=deploy.prod,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def hotfix(deploy, make_service):
    """Prod runs api and web at 1 on main; origin has hotfix/x moving web to 2."""
    services = running_on_prod(deploy, make_service, ("api", "web"))
    dev = deploy.dev_repo
    dev.git.checkout("-b", "hotfix/x")
    services["web"].tag = "2"
    make_service("web", "2")
    deploy.write_service(services["web"])
    deploy.commit("hotfix: web to 2")
    deploy.push("hotfix/x")
    dev.git.checkout("main")
    return services


def test_a_hotfix_release_needs_the_flag(deploy, hotfix):
    head = deploy.prod_repo.head.commit.hexsha
    run = engine.run(deploy.prod, "99", "--branch", "hotfix/x")
    assert run.rc == 4, run
    assert "--force-allow-non-main" in run.output
    assert deploy.prod_repo.head.commit.hexsha == head
    assert deploy.prod_repo.active_branch.name == "main"
    assert not (deploy.prod / ".asd").exists()


def test_hotfix_lifecycle_release_then_return_to_main(deploy, hotfix, docker_client):
    web = hotfix["web"]
    result = _just(deploy, "release-run", "99", "--branch", "hotfix/x", "--force-allow-non-main")
    assert result.returncode == 0, result.stdout + result.stderr
    prod = deploy.prod_repo
    assert prod.active_branch.name == "hotfix/x"
    deployed = prod.head.commit.hexsha
    (container,) = docker_client.containers.list(
        filters={"label": f"com.docker.compose.project={web.project}"}
    )
    assert container.image.id == docker_client.images.get(web.image).id

    # Not merged yet: refused, prod stays on the hotfix.
    result = _just(deploy, "release-return-to-main")
    assert result.returncode == 1, result.stdout
    assert "not merged into origin/main" in result.stdout
    assert prod.active_branch.name == "hotfix/x"

    # The PR is merged; main also moves api on, which the hotfix did not deploy.
    dev = deploy.dev_repo
    dev.git.merge("--no-ff", "-m", "Merge hotfix/x", "origin/hotfix/x")
    deploy.write("packages/api/notes.txt", "main moved on\n")
    deploy.commit("api change on main")
    deploy.push()

    result = _just(deploy, "release-return-to-main")
    assert result.returncode == 0, result.stdout + result.stderr
    assert prod.active_branch.name == "main"
    assert prod.head.commit.hexsha == dev.head.commit.hexsha
    # clean: the engine's own .asd/ and reports/ keep themselves out of git
    assert not prod.is_dirty()
    assert not prod.untracked_files
    assert "return_to_main: BACK ON MAIN" in result.stdout
    assert "needs a release (differs from main): api" in result.stdout
    assert f"--base-sha {deployed}" in result.stdout
    state = engine.Run([], 0, "", deploy.prod, "return-to-main").state
    assert state.extra["HOTFIX_SHA"] == deployed and state.extra["DRIFT"] == "api"
    assert state.branch == "main"


def test_return_to_main_on_main_is_refused(deploy, hotfix):
    head = deploy.prod_repo.head.commit.hexsha
    result = _just(deploy, "release-return-to-main")
    assert result.returncode == 1, result.stdout
    assert "already on main" in result.stdout
    assert deploy.prod_repo.head.commit.hexsha == head
