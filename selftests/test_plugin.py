"""The plugin outside a deploy repository: installed, it leaves other projects alone.

A release run is `-m release` (revert, return_to_main) given one of the engine's
options, or run in a deploy repository. Anywhere else the marker is the project's
own, and the engine's machinery is not even imported.
"""

from __future__ import annotations

import pytest

from selftests.support import engine

#: What a pytest run outside a deploy repository must not load: the engine's
#: machinery and what it brings in (the Docker SDK, HTTP, pydantic).
HEAVY = ("docker", "httpx", "pydantic", "release_phases.host", "release_phases.context")

PROJECT_CONFTEST = f"""
import sys

def pytest_terminal_summary(terminalreporter):
    loaded = sorted(m for m in {HEAVY!r} if m in sys.modules)
    terminalreporter.write_line("loaded by this run: " + (" ".join(loaded) or "none"))
"""


@pytest.fixture
def unrelated(pytester: pytest.Pytester) -> pytest.Pytester:
    """A project with its own `release` marker (and a `return_to_main` one)."""
    pytester.makeini(
        """
        [pytest]
        markers =
            release: this project's own release checks
            return_to_main: this project's own
        """
    )
    pytester.makeconftest(PROJECT_CONFTEST)
    pytester.makepyfile(
        test_project="""
        import pytest

        @pytest.mark.release
        def test_version_is_tagged():
            assert True

        @pytest.mark.return_to_main
        def test_back():
            assert True

        def test_unmarked():
            assert True
        """
    )
    return pytester


@pytest.mark.parametrize(("marker", "test"), [("release", "test_version_is_tagged"),
                                              ("return_to_main", "test_back")])  # fmt: skip
def test_a_projects_own_release_marker_runs_its_own_tests(unrelated, marker, test):
    result = unrelated.runpytest_subprocess("-m", marker, "-v", "-p", "no:cacheprovider")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines([f"*test_project.py::{test} PASSED*", "*1 passed, 2 deselected*"])
    assert "--ticket" not in result.stdout.str()
    result.stdout.fnmatch_lines(["loaded by this run: none"])


def test_a_plain_run_loads_none_of_the_machinery(unrelated):
    result = unrelated.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["loaded by this run: none", "*3 passed*"])


def test_in_a_deploy_repository_a_release_without_ticket_is_refused(unrelated):
    unrelated.makefile(".yaml", **{"packages/web/manifest": "image: {name: web, tag: '1'}\n"})
    result = unrelated.runpytest_subprocess("-m", "release", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
    assert "--ticket is required" in result.stderr.str()


@pytest.mark.parametrize(
    ("args", "where"),
    [((), "{path} (the current directory)"),
     (("--repo", "deploy"), "{path}/deploy (--repo deploy)"),
     (("-o", "release_repo=deploy"),
      "{path}/deploy (the ini option release_repo = deploy, from the rootdir {path})")],
)  # fmt: skip
def test_outside_a_deploy_repository_the_error_says_where_it_looked(pytester, args, where):
    result = pytester.runpytest_subprocess("-m", "release", "--ticket", "5", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
    err = result.stderr.str()
    looked = where.format(path=pytester.path)
    assert f"no deploy repository at {looked}: it is not a git checkout" in err, err
    assert "or name that with --repo: pytest -m release --ticket 5 --repo <path" in err, err


def test_a_git_checkout_without_any_service_is_refused_before_anything_is_pulled(deploy):
    """This project's own clone, say: a checkout with an origin, no packages/ at HEAD nor
    on origin, and a ticket script it held already (the merge brings none). Nothing is
    pulled, nothing written there."""
    deploy.write("releases/5-migrate.sh", "echo never\n")
    deploy.commit("a ticket script, and no service")
    deploy.push()
    deploy.clone_prod()
    deploy.write("README.md", "changed on origin\n")
    deploy.commit("something new on origin, still no service")
    deploy.push()
    head = deploy.prod_repo.head.commit.hexsha
    run = engine.run(deploy.prod, "5")
    assert run.rc == pytest.ExitCode.USAGE_ERROR, run
    assert "is not a deploy repository: no packages/<service>/manifest.yaml" in run.output, run
    assert deploy.prod_repo.head.commit.hexsha == head
    assert not (deploy.prod / ".asd").exists() and not (deploy.prod / "reports").exists()
