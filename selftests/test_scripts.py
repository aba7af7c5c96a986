"""Hooks and ticket scripts, found in a real directory tree and run for real."""

from __future__ import annotations

import io
import sys
import textwrap
import time
from pathlib import Path

import pytest

from release_phases.errors import ConfigError, ReleaseError
from release_phases.host import Host
from release_phases.host.shell import Runner
from release_phases.scripts import (
    INSTALL_TS,
    Lookup,
    Script,
    ScriptFailed,
    argv,
    find_hook,
    find_ticket_scripts,
    preflight,
    resolve_runtime,
    run_script,
    script_env,
)

DOCUMENTED = (
    "TICKET",
    "BASE_SHA",
    "MERGE_SHA",
    "SERVICES",
    "SERVICE",
    "CONTAINER_PREFIX",
    "REPO_ROOT",
)

SH_DUMP = """\
for name in {names}; do printf '%s=%s\\n' "$name" "${{!name}}"; done > "$1"
printf 'CWD=%s\\n' "$(pwd -P)" >> "$1"
echo "dumped by bash"
"""

PY_DUMP = """\
import os
names = {names!r}
with open({out!r}, "w") as f:
    f.writelines(f"{{n}}={{os.environ.get(n, '<unset>')}}\\n" for n in names)
    f.write(f"CWD={{os.getcwd()}}\\n")
print("dumped by python")
"""

# Type annotations: plain JavaScript would not parse this file.
TS_DUMP = """\
import {{ writeFileSync }} from "node:fs";
import process from "node:process";

const names: string[] = {names_json};
function line(name: string): string {{
  return `${{name}}=${{process.env[name] ?? "<unset>"}}`;
}}
writeFileSync({out_json}, names.map(line).join("\\n") + "\\nCWD=" + process.cwd() + "\\n");
console.log("dumped by typescript");
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "deploy"
    (root / "packages" / "api").mkdir(parents=True)
    (root / "releases").mkdir()
    return root


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def env_for(repo: Path, *, service: str | None) -> dict[str, str]:
    return script_env(
        ticket="12",
        base_sha="a" * 40,
        merge_sha="b" * 40,
        services=["api", "worker"],
        container_prefix="rp-test-",
        repo_root=repo,
        service=service,
    )


def read_dump(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


def expected(repo: Path, *, service: str) -> dict[str, str]:
    return {
        "TICKET": "12",
        "BASE_SHA": "a" * 40,
        "MERGE_SHA": "b" * 40,
        "SERVICES": "api worker",
        "SERVICE": service,
        "CONTAINER_PREFIX": "rp-test-",
        "REPO_ROOT": str(repo),
        "CWD": str(repo.resolve()),
    }


def run(script: Script, repo: Path, *, service: str | None = None, timeout: float = 30, **kw):
    runner = Runner(stream_to=io.StringIO())
    result = run_script(
        script,
        host=Host(repo, runner),
        env=env_for(repo, service=service),
        cwd=repo,
        timeout=timeout,
        **kw,
    )
    return result, runner


# -- running, for real ------------------------------------------------------------------


def test_scripts_are_told_the_compose_the_engine_drives(repo: Path) -> None:
    env = script_env(
        ticket="12",
        base_sha="a" * 40,
        merge_sha="b" * 40,
        services=["api"],
        container_prefix="",
        repo_root=repo,
        compose="/opt/compose/docker-compose",
    )
    assert env["RELEASE_PHASES_COMPOSE"] == "/opt/compose/docker-compose"
    # None found: the variable is not set, so the operator's own (if any) stands.
    assert "RELEASE_PHASES_COMPOSE" not in env_for(repo, service=None)


def test_sh_hook_runs_with_bash_in_the_repo_with_the_documented_environment(repo: Path) -> None:
    out = repo.parent / "sh.env"
    body = SH_DUMP.format(names=" ".join(DOCUMENTED)).replace('"$1"', f'"{out}"')
    write(repo / "packages/api/pre_start_init.sh", body)  # no exec bit: bash runs it
    hook = find_hook(repo / "packages/api", "pre_start_init")
    assert hook == Script(
        repo / "packages/api/pre_start_init.sh", "sh", "packages/api/pre_start_init.sh"
    )

    result, runner = run(hook, repo, service="api")

    assert read_dump(out) == expected(repo, service="api")
    assert result.output == "dumped by bash\n"
    assert runner.stream_to.getvalue() == "dumped by bash\n"  # streamed as well as kept


def test_py_ticket_script_runs_with_this_python(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVICE", "leaked-from-the-operator-shell")
    out = repo.parent / "py.env"
    write(repo / "releases/12-backfill.py", PY_DUMP.format(names=list(DOCUMENTED), out=str(out)))
    [script] = find_ticket_scripts(repo, "12")

    result, runner = run(script, repo)

    assert read_dump(out) == expected(repo, service="")
    assert result.output == "dumped by python\n"
    assert runner.history[-1].argv[:2] == [sys.executable, "-u"]


def test_ts_script_runs_typescript_with_deno_from_pypi(repo: Path) -> None:
    out = repo.parent / "ts.env"
    names_json = "[" + ", ".join(f'"{n}"' for n in DOCUMENTED) + "]"
    write(
        repo / "packages/api/ensure-config.ts",
        TS_DUMP.format(names_json=names_json, out_json=f'"{out}"'),
    )
    hook = find_hook(repo / "packages/api", "ensure-config")
    deno_only = Lookup(path="")  # nothing on PATH, so no bun: deno from its PyPI package
    if deno_only.packaged_deno() is None:
        pytest.fail("the deno package is not installed: pip install -e '.[dev]'", pytrace=False)

    result, runner = run(hook, repo, service="api", lookup=deno_only)

    assert read_dump(out) == expected(repo, service="api")
    assert result.output == "dumped by typescript\n"
    deno, *flags, path = runner.history[-1].argv
    assert (flags, path) == (["run", "-A"], str(hook.path))
    assert Path(deno).read_bytes()[:4] == b"\x7fELF"  # the binary itself, not a wrapper


def test_a_failing_script_raises_with_its_rc_and_output(repo: Path) -> None:
    write(
        repo / "releases/12-migrate.sh",
        """\
        echo "starting migration"
        echo "error: table users is locked" >&2
        exit 3
        """,
    )
    [script] = find_ticket_scripts(repo, "12")

    with pytest.raises(ScriptFailed) as failed:
        run(script, repo)

    err = failed.value
    assert err.rc == 3
    assert err.script == script
    assert not err.timed_out
    assert err.tail == "starting migration\nerror: table users is locked"
    message = str(err)
    assert message.startswith("releases/12-migrate.sh exited 3; its last output:\n")
    assert "error: table users is locked" in message
    assert f"cd {repo} && TICKET=12 " in err.next_command
    assert str(script.path) in err.next_command


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("12-x.sh", "exit 7\n"),
        ("12-x.py", "import sys\nsys.exit(7)\n"),
        (
            "12-x.ts",
            'import process from "node:process";\nconst rc: number = 7;\nprocess.exit(rc);\n',
        ),
    ],
)
def test_every_runtime_hands_back_the_exit_code(repo: Path, name: str, body: str) -> None:
    write(repo / "releases" / name, body)
    [script] = find_ticket_scripts(repo, "12")
    with pytest.raises(ScriptFailed) as failed:
        run(script, repo)
    assert failed.value.rc == 7


def test_a_script_past_its_timeout_is_killed_and_reported(repo: Path) -> None:
    write(repo / "releases/12-slow.sh", 'echo "waiting for the lock"\nsleep 30\n')
    [script] = find_ticket_scripts(repo, "12")

    start = time.monotonic()
    with pytest.raises(ScriptFailed) as failed:
        run(script, repo, timeout=1)
    elapsed = time.monotonic() - start

    assert 1 <= elapsed < 3
    assert failed.value.timed_out
    assert failed.value.rc == 124
    assert str(failed.value).startswith("releases/12-slow.sh timed out after 1s and was killed")
    assert "waiting for the lock" in str(failed.value)


# -- finding ----------------------------------------------------------------------------


def test_ticket_12_does_not_match_ticket_123(repo: Path) -> None:
    for name in ("123-other.sh", "12.sh", "112-x.sh", "12-notes.md", "x-12-y.sh"):
        write(repo / "releases" / name, "exit 1\n")
    write(repo / "releases/12-fix.sh", "true\n")

    assert [s.name for s in find_ticket_scripts(repo, "12")] == ["releases/12-fix.sh"]
    assert [s.name for s in find_ticket_scripts(repo, "123")] == ["releases/123-other.sh"]
    assert find_ticket_scripts(repo, "7") == []


def test_several_ticket_scripts_come_in_name_order(repo: Path) -> None:
    for name in ("12-c-finish.ts", "12-a-schema.sh", "12-b-data.py"):
        write(repo / "releases" / name, "\n")
    (repo / "releases/12-d-dir.sh").mkdir()  # not a file: ignored

    scripts = find_ticket_scripts(repo, "12")

    assert [(s.name, s.kind) for s in scripts] == [
        ("releases/12-a-schema.sh", "sh"),
        ("releases/12-b-data.py", "py"),
        ("releases/12-c-finish.ts", "ts"),
    ]


def test_no_releases_directory_means_no_ticket_scripts(tmp_path: Path) -> None:
    assert find_ticket_scripts(tmp_path, "12") == []


@pytest.mark.parametrize("ticket", ["", "../12", ".hidden"])
def test_a_ticket_that_is_not_a_plain_name_is_refused(repo: Path, ticket: str) -> None:
    with pytest.raises(ConfigError, match="invalid ticket"):
        find_ticket_scripts(repo, ticket)


def test_a_hook_with_two_extensions_is_refused_naming_both(repo: Path) -> None:
    write(repo / "packages/api/post_start_init.sh", "true\n")
    write(repo / "packages/api/post_start_init.py", "pass\n")

    with pytest.raises(ConfigError) as refused:
        find_hook(repo / "packages/api", "post_start_init")

    assert "packages/api/post_start_init.sh" in str(refused.value)
    assert "packages/api/post_start_init.py" in str(refused.value)


def test_a_missing_hook_is_none_and_an_unknown_hook_name_a_mistake(repo: Path) -> None:
    write(repo / "packages/api/pre_start_init.md", "notes\n")
    assert find_hook(repo / "packages/api", "pre_start_init") is None
    with pytest.raises(ValueError, match="unknown hook"):
        find_hook(repo / "packages/api", "pre-start-init")


# -- runtimes ---------------------------------------------------------------------------


def test_argv_puts_the_runtime_before_the_script() -> None:
    script = Script(Path("/deploy/releases/12-x.ts"), "ts", "releases/12-x.ts")
    runtimes = {"ts": ["/opt/deno", "run", "-A"], "sh": ["/bin/bash"]}
    assert argv(script, runtimes) == ["/opt/deno", "run", "-A", "/deploy/releases/12-x.ts"]
    with pytest.raises(ValueError, match="no runtime"):
        argv(script, {"sh": ["/bin/bash"]})


def test_bun_is_preferred_for_typescript_when_installed(tmp_path: Path) -> None:
    bun = tmp_path / "bun"
    bun.write_text("#!/bin/sh\n")
    bun.chmod(0o755)
    assert resolve_runtime("ts", lookup=Lookup(path=str(tmp_path))) == [str(bun), "run"]


def test_deno_on_path_is_used_when_the_package_is_not(tmp_path: Path) -> None:
    deno = tmp_path / "deno"
    deno.write_text("#!/bin/sh\n")
    deno.chmod(0o755)
    lookup = Lookup(path=str(tmp_path), deno_package=False)
    assert resolve_runtime("ts", lookup=lookup) == [str(deno), "run", "-A"]


def test_typescript_without_any_runtime_fails_the_preflight(repo: Path) -> None:
    write(repo / "releases/12-a.py", "pass\n")
    write(repo / "releases/12-b.ts", "const x: number = 1;\n")
    write(repo / "packages/api/ensure-config.ts", "const y: number = 2;\n")
    found = [
        *find_ticket_scripts(repo, "12"),
        find_hook(repo / "packages/api", "ensure-config"),
    ]
    empty = repo.parent / "empty"
    empty.mkdir()
    nothing = Lookup(path=str(empty), deno_package=False)

    with pytest.raises(ReleaseError) as failed:
        preflight(found, lookup=nothing)

    message = str(failed.value)
    assert "releases/12-b.ts, packages/api/ensure-config.ts: " in message
    assert "neither bun nor deno is installed" in message
    assert "12-a.py" not in message  # this Python needs no lookup
    assert failed.value.next_command == f"{INSTALL_TS}, then rerun the release"
    assert INSTALL_TS == "install bun, or deno (pip install deno)"
    assert failed.value.untouched == "everything: no script was run"


def test_preflight_passes_when_every_runtime_is_installed(repo: Path) -> None:
    found = [
        Script(repo / "a.sh", "sh", "a.sh"),
        Script(repo / "b.py", "py", "b.py"),
        Script(repo / "c.ts", "ts", "c.ts"),
    ]
    assert preflight(found) is None


@pytest.mark.reliability(
    "bad input", "a hook or ticket script that is a symlink out of the repository"
)
def test_a_hook_or_ticket_script_that_links_out_of_the_repo_is_refused(tmp_path):
    outside = tmp_path / "outside.sh"
    outside.write_text("echo I was not reviewed\n")
    repo = tmp_path / "repo"
    (repo / "packages" / "api").mkdir(parents=True)
    (repo / "releases").mkdir()
    (repo / "packages" / "api" / "pre_start_init.sh").symlink_to(outside)
    (repo / "releases" / "12-x.sh").symlink_to(outside)
    with pytest.raises(ConfigError, match=r"packages/api/pre_start_init\.sh is a link to"):
        find_hook(repo / "packages" / "api", "pre_start_init")
    with pytest.raises(ConfigError, match=r"releases/12-x\.sh is a link to .*outside"):
        find_ticket_scripts(repo, "12")
    # A link within the directory is a file of the repo: taken.
    (repo / "releases" / "12-x.sh").unlink()
    (repo / "releases" / "real.sh").write_text("echo ok\n")
    (repo / "releases" / "12-y.sh").symlink_to("real.sh")
    assert [s.name for s in find_ticket_scripts(repo, "12")] == ["releases/12-y.sh"]
