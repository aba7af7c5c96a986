"""Options and names that are not what they claim are refused, naming what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from release_phases.errors import ConfigError
from release_phases.options import (
    Options,
    typed_overrides,
    validate_branch,
    validate_service,
    validate_sha,
)


@pytest.mark.parametrize("branch", ["main", "hotfix/x", "release-1.2", "a_b/c.d"])
def test_branch_names_git_takes(branch):
    assert validate_branch(branch) == branch


@pytest.mark.reliability("bad input", "a branch name that is an option or an expression")
@pytest.mark.parametrize(
    "branch",
    ["-x", "--upload-pack=touch pwned", "a..b", "a b", "x;id", "main@{1}", "a/", "a.lock",
     ".hidden", "a/.b", "a//b", "", "$(id)"],
)  # fmt: skip
def test_branch_names_that_are_options_or_expressions_are_refused(branch):
    with pytest.raises(ConfigError, match=r"--branch .* is not a branch name"):
        validate_branch(branch)


@pytest.mark.parametrize("sha", ["abc1234", "a" * 40])
def test_shas(sha):
    assert validate_sha(sha) == sha


@pytest.mark.reliability("bad input", "a --base-sha that is not a sha")
@pytest.mark.parametrize("sha", ["HEAD~1", "main", "abc", "a" * 41, "ABC1234", "abc1234;id"])
def test_a_base_sha_must_be_a_sha(sha):
    with pytest.raises(ConfigError, match=r"--base-sha .* is not a commit sha"):
        validate_sha(sha)


@pytest.mark.parametrize("name", ["web", "api-2", "a.b_c"])
def test_service_names(name):
    assert validate_service(name, "packages/x/manifest.yaml") == name


@pytest.mark.reliability("bad input", "a package directory that is no service name")
@pytest.mark.parametrize("name", ["x;touch${IFS}pwned", "-web", ".web", "a b", "a" * 65])
def test_a_package_dir_that_is_no_service_name_is_refused(name):
    with pytest.raises(ConfigError, match=r"packages/x/manifest\.yaml: .* is not a service name"):
        validate_service(name, "packages/x/manifest.yaml")


def test_a_reverts_next_command_keeps_what_it_chose_to_leave_alone():
    opts = Options(ticket="7", repo=Path.cwd(), mode="revert", skip_git=True, skip_data=True)
    assert opts.command() == "pytest -m revert --ticket 7 --skip-git --skip-data"
    assert opts.command("--skip-data") == "pytest -m revert --ticket 7 --skip-git --skip-data"
    assert opts.command(mode="release") == "pytest -m release --ticket 7"
    plain = Options(ticket="7", repo=Path.cwd(), mode="revert")
    assert plain.command() == "pytest -m revert --ticket 7"


#: The options an operator might have typed: -o values, one with a space.
TYPED = dict(ini_overrides=("release_pull=false", "container_prefix=a b"), parallel=3)
DASH_O = "-o release_pull=false -o 'container_prefix=a b'"


@pytest.mark.parametrize(
    ("mode", "extra", "other_mode", "expected"),
    [
        ("release", (), None, f"pytest -m release --ticket 7 --parallel 3 {DASH_O}"),
        ("release", ("--from=migrate",), None,
         f"pytest -m release --ticket 7 --parallel 3 --from=migrate {DASH_O}"),
        ("release", (), "revert", f"pytest -m revert --ticket 7 --parallel 3 {DASH_O}"),
        ("return_to_main", (), None, f"pytest -m return_to_main {DASH_O}"),
    ],
)  # fmt: skip
def test_a_next_command_keeps_the_options_the_operator_typed(mode, extra, other_mode, expected):
    opts = Options(ticket="7", repo=Path.cwd(), mode=mode, **TYPED)
    assert opts.command(*extra, mode=other_mode) == expected


def test_a_next_command_keeps_the_repository_named():
    opts = Options(ticket="7", repo=Path("/srv/deploy"), ini_overrides=("release_pull=false",))
    assert opts.command() == "pytest -m release --ticket 7 --repo /srv/deploy -o release_pull=false"


@pytest.mark.parametrize(
    ("extra", "mode", "expected"),
    [
        ((), None, "pytest -m release --ticket 7 --base-sha abc1234"),
        # The run pulled: the ledger names the BASE_SHA it recorded, once.
        (("--base-sha def5678",), None, "pytest -m release --ticket 7 --base-sha def5678"),
        # A resume reads BASE_SHA from the state file.
        (("--from=migrate",), None, "pytest -m release --ticket 7 --from=migrate"),
        (("-k verify",), None, "pytest -m release --ticket 7 -k verify"),
        ((), "revert", "pytest -m revert --ticket 7"),
    ],
)
def test_a_base_sha_given_is_kept_for_a_rerun_of_prepare_only(extra, mode, expected):
    opts = Options(ticket="7", repo=Path.cwd(), base_sha="abc1234")
    assert opts.command(*extra, mode=mode) == expected


def test_the_ini_values_typed_are_read_from_the_command_line_in_every_spelling():
    args = ["-m", "release", "-o", "release_pull=false", "--ticket", "7", "-orelease_parallel=2",
            "--override-ini", "container_prefix=a b", "--override-ini=release_stop_timeout=1",
            "-p", "no:x", "-k", "verify"]  # fmt: skip
    assert typed_overrides(args) == (
        "release_pull=false",
        "release_parallel=2",
        "container_prefix=a b",
        "release_stop_timeout=1",
    )
    assert typed_overrides(["-m", "release", "-o"]) == ()
