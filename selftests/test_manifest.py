"""manifest.yaml: defaults, and errors that name the file and the key."""

from __future__ import annotations

import re

import pytest

from release_phases import manifest
from release_phases.errors import ConfigError

IMAGE = 'image: {name: demo/web, tag: "2"}\n'
GOOD = IMAGE + 'health: {endpoint: "http://127.0.0.1:18080/health"}\n'


def _load(tmp_path, text: str, files=("compose.yaml",)):
    pkg = tmp_path / "packages" / "web"
    pkg.mkdir(parents=True)
    for name in files:
        (pkg / name).write_text("services: {}\n")
    (pkg / "manifest.yaml").write_text(text)
    return manifest.load(tmp_path, "web")


def test_defaults(tmp_path):
    m = _load(tmp_path, GOOD)
    assert m.image.ref == "demo/web:2"
    assert m.containers == ("web",)
    assert (m.health.expected_code, m.health.timeout) == (200, 120.0)
    assert m.compose_file.name == "compose.yaml"
    assert m.backup.empty and not m.e2e_enabled


def test_the_compose_file_is_found_by_its_usual_names(tmp_path):
    m = _load(tmp_path, GOOD, files=("docker-compose.yml",))
    assert m.compose_file.name == "docker-compose.yml"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("image: {name: demo/web}\nhealth: {endpoint: 'http://x/h'}\n", "image.tag is required"),
        ("image: {name: demo/web, tag: 1.10}\nhealth: {endpoint: 'http://x/h'}\n", "image.tag"),
        (IMAGE + "health: {endpoint: 'http://x/h', timeout: true}\n", "health.timeout must be"),
        ("image: {name: a, tag: '1'}\nhealth: {endpoint: 'ftp://x'}\n", "health.endpoint"),
        (GOOD + "containers: web\n", "containers must be list"),
        (GOOD + "containers: [web, 3]\n", "containers[1]"),
        (GOOD + "compose_file: other.yaml\n", "compose_file names other.yaml"),
        (GOOD + "backup: {volumes: [data, '']}\n", "backup.volumes[1]"),
        (GOOD + "e2e: {enabled: yes please}\n", "e2e.enabled"),
        ("image: {name: a, tag: '1'}\nhealth: {timeout: 5}\n", "health must declare at least"),
        (IMAGE + "health: {tcp: 'localhost'}\n", "health.tcp must be host:port"),
        (IMAGE + "health: {tcp: 'localhost:99999'}\n", "health.tcp must be host:port"),
        (IMAGE + "health: {docker: 'yes'}\n", "health.docker must be bool"),
        (IMAGE + "health: {command: 'pg_isready'}\n", "health.command must be list"),
        (GOOD + "backup: {dump: {command: [pg_dump]}}\n", "backup.dump.restore is required"),
        (GOOD + "backup: {dump: [pg_dump]}\n", "backup.dump must be a mapping"),
        (GOOD + "backup: {when: later}\n", "backup.when must be one of prepare, stopped"),
        (
            GOOD + "backup: {when: stopped, dump: {command: [a], restore: [b]}}\n",
            "backup.when stopped cannot go with backup.dump",
        ),
        ("- a list\n", "must be a mapping"),
    ],
)
def test_mistakes_name_the_file_and_the_key(tmp_path, text, key):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, text)
    message = str(err.value)
    assert "packages/web/manifest.yaml" in message and key in message, message
    assert "nothing was changed" in message


def test_health_kinds_each_alone_or_together(tmp_path):
    text = """
image: {name: demo/db, tag: "15"}
health:
  tcp: "127.0.0.1:5432"
  docker: true
  command: [pg_isready, -U, app]
"""
    m = _load(tmp_path, text)
    assert m.health.kinds == ("tcp", "docker", "command")
    assert m.health.endpoint is None
    assert m.health.tcp_address == ("127.0.0.1", 5432)
    assert m.health.command == ("pg_isready", "-U", "app")
    assert _load(tmp_path / "b", GOOD).health.kinds == ("endpoint",)



@pytest.mark.reliability("bad input", "a compose_file outside the package")
@pytest.mark.parametrize("name", ["../other/compose.yaml", "/etc/compose.yaml"])
def test_a_compose_file_outside_the_package_is_refused(tmp_path, name):
    with pytest.raises(ConfigError, match=r"compose_file must be a path inside the package"):
        _load(tmp_path, GOOD + f"compose_file: {name}\n")


@pytest.mark.reliability("bad input", "a compose file that is a symlink out of the package")
def test_a_compose_file_that_links_out_of_the_package_is_refused(tmp_path):
    outside = tmp_path / "elsewhere.yaml"
    outside.write_text("services: {}\n")
    pkg = tmp_path / "packages" / "web"
    pkg.mkdir(parents=True)
    (pkg / "compose.yaml").symlink_to(outside)
    (pkg / "manifest.yaml").write_text(GOOD)
    with pytest.raises(ConfigError, match=r"compose_file compose\.yaml is a link to .*outside"):
        manifest.load(tmp_path, "web")


def test_a_dump_backup_and_when(tmp_path):
    text = GOOD + """
backup:
  volumes: [data]
  dump: {command: [pg_dump, -U, app, app], restore: [psql, -U, app, app]}
"""
    m = _load(tmp_path, text)
    assert m.backup.dump is not None
    assert m.backup.dump.command == ("pg_dump", "-U", "app", "app")
    assert m.backup.dump.restore == ("psql", "-U", "app", "app")
    assert m.backup.when == "prepare" and not m.backup.when_stopped and not m.backup.empty
    stopped = _load(tmp_path / "b", GOOD + "backup: {volumes: [data], when: stopped}\n")
    assert stopped.backup.when_stopped


@pytest.mark.reliability("bad input", "a manifest nested 1,500 brackets deep")
def test_a_manifest_nested_too_deep_is_a_yaml_error_not_a_crash(tmp_path):
    with pytest.raises(ConfigError, match=r"not valid YAML: it is nested too deeply"):
        _load(tmp_path, "image: " + "[" * 1500 + "]" * 1500 + "\n")


@pytest.mark.reliability("bad input", "a compose file nested too deep")
def test_a_compose_file_nested_too_deep_is_refused(tmp_path):
    from release_phases.host.compose import project_name

    deep = tmp_path / "compose.yaml"
    deep.write_text("services: " + "{a: " * 1500 + "1" + "}" * 1500 + "\n")
    with pytest.raises(ConfigError, match=r"is not valid YAML: it is nested too deeply"):
        project_name(deep)


@pytest.mark.reliability("bad input", "a misspelt key in a manifest")
@pytest.mark.parametrize(
    ("text", "said"),
    [
        pytest.param(
            GOOD + "backup: {volumes: [web-data], pahts: [/srv/data]}\n",
            "backup.pahts is not a known key; did you mean backup.paths?",
            id="backup.pahts",
        ),
        pytest.param(
            "image: {name: a, tag: '1'}\nhealth: {endpoint: 'http://x/h', timout: 5}\n",
            "health.timout is not a known key; did you mean health.timeout?",
            id="health.timout",
        ),
        pytest.param(
            GOOD + "bakup: {volumes: [data]}\n",
            "bakup is not a known key; did you mean backup?",
            id="bakup",
        ),
        pytest.param(
            GOOD + "backup: {dump: {comand: [pg_dump], restore: [psql]}}\n",
            "backup.dump.comand is not a known key; did you mean backup.dump.command?",
            id="backup.dump.comand",
        ),
        pytest.param(
            "image: {name: a, tag: '1', tga: '2'}\nhealth: {docker: true}\n",
            "image.tga is not a known key; did you mean image.tag?",
            id="image.tga",
        ),
        pytest.param(
            GOOD + "e2e: {enable: true}\n",
            "e2e.enable is not a known key; did you mean e2e.enabled?",
            id="e2e.enable",
        ),
        pytest.param(
            GOOD + "owner: ops\n",
            "owner is not a known key; the keys here are image, health, containers,"
            " compose_file, backup, e2e",
            id="no-near-key",
        ),
    ],
)
def test_an_unknown_key_is_refused_with_the_nearest_known_one(tmp_path, text, said):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, text)
    assert f"invalid manifest packages/web/manifest.yaml: {said}" in str(err.value)


@pytest.mark.reliability("bad input", "a manifest key written without a value")
@pytest.mark.parametrize(
    ("text", "key"),
    [
        (GOOD + "backup:\n  dump:\n", "backup.dump"),
        (GOOD + "backup:\n", "backup"),
        (IMAGE + "health: {endpoint: 'http://x/h', tcp: }\n", "health.tcp"),
    ],
)
def test_a_key_without_a_value_is_refused_not_taken_as_absent(tmp_path, text, key):
    """pydantic would read `dump:` (null) as no dump at all for an optional key: the
    backup it meant would silently not be taken."""
    with pytest.raises(ConfigError, match=rf": {key} has no value: give it one"):
        _load(tmp_path, text)


@pytest.mark.reliability("bad input", "a bool where a manifest wants a number")
@pytest.mark.parametrize(
    ("text", "said"),
    [
        (IMAGE + "health: {endpoint: 'http://x/h', timeout: true}\n", "health.timeout must be"),
        (
            IMAGE + "health: {endpoint: 'http://x/h', expected_code: true}\n",
            "health.expected_code must be int, got bool True",
        ),
        ("image: {name: a, tag: yes}\nhealth: {docker: true}\n", "image.tag must be text"),
        (IMAGE + "health: {endpoint: 'http://x', expected_code: '200'}\n", "must be int, got str"),
        (IMAGE + "health: {docker: 1}\n", "health.docker must be bool, got int 1"),
    ],
)
def test_no_value_is_coerced(tmp_path, text, said):
    """Python's bool is an int and pydantic's lax mode turns "200" into 200: the
    documents are strict (schema.Strict), so each of these is refused."""
    with pytest.raises(ConfigError, match=re.escape(said)):
        _load(tmp_path, text)


def test_a_whole_number_tag_and_timeout_are_read_as_written(tmp_path):
    m = _load(tmp_path, "image: {name: a, tag: 15}\nhealth: {docker: true, timeout: 5}\n")
    assert (m.image.tag, m.health.timeout) == ("15", 5.0)


@pytest.mark.reliability("bad input", "a timeout that is not a finite number")
@pytest.mark.parametrize("value", [".nan", ".inf", "0", "-1"])
def test_a_timeout_must_be_a_positive_finite_number(tmp_path, value):
    with pytest.raises(ConfigError, match=r"health\.timeout must be"):
        _load(tmp_path, IMAGE + f"health: {{docker: true, timeout: {value}}}\n")


def test_every_mistake_of_a_manifest_is_named_at_once(tmp_path):
    text = (
        "image: {name: a, tag: 1.5}\nhealth: {docker: true}\n"
        "backup: {pahts: [/x], when: later}\n"
    )
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, text)
    assert str(err.value).splitlines()[0] == (
        "invalid manifest packages/web/manifest.yaml: backup.pahts is not a known key; did "
        'you mean backup.paths?; image.tag is a number; quote it (tag: "1.10"), YAML would '
        "change it; backup.when must be one of prepare, stopped, got 'later'"
    )


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("", "packages/web/manifest.yaml: the top level must be a mapping, got NoneType"),
        ("1: x\n", "; the top level has a key 1 that is not a string"),
        (GOOD + "backup: {dump: {command: [pg_dump, 3]}}\n", "backup.dump.command[1] must be str"),
    ],
)
def test_odd_shapes_are_named_by_file_and_key(tmp_path, text, said):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, text)
    assert said in str(err.value)


@pytest.mark.reliability("bad input", "a manifest that is not UTF-8 text")
def test_a_manifest_that_is_not_text_is_refused(tmp_path):
    pkg = tmp_path / "packages" / "web"
    pkg.mkdir(parents=True)
    (pkg / "compose.yaml").write_text("services: {}\n")
    (pkg / "manifest.yaml").write_bytes(GOOD.encode() + b"# \xff\n")
    with pytest.raises(ConfigError, match=r"manifest\.yaml: byte \d+ is not UTF-8"):
        manifest.load(tmp_path, "web")


@pytest.mark.reliability("bad input", "a manifest key given twice")
def test_a_key_given_twice_is_refused_not_overridden(tmp_path):
    """PyYAML keeps the last of two equal keys: the first `backup:` would be lost."""
    text = GOOD + "backup: {volumes: [data]}\ne2e: {enabled: false}\nbackup: {paths: [/srv]}\n"
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, text)
    message = str(err.value)
    assert "not valid YAML: the key 'backup' is given twice in one mapping" in message
    assert "line 3" in message and "line 5" in message, message


def test_a_deployed_manifest_leaves_unknown_keys_out_and_says_which(tmp_path):
    """What already ran was accepted by an older engine: its typos are listed, not refused
    (a release cannot change BASE_SHA), while a release's own manifest is refused."""
    text = GOOD + "backup: {volumes: [data], pahts: [/srv]}\nhealth_check: x\n"
    with pytest.raises(ConfigError, match=r"backup\.pahts is not a known key"):
        _load(tmp_path, text)
    found = manifest.load(tmp_path, "web", deployed=True)
    assert found.backup.volumes == ("data",) and found.backup.paths == ()
    assert [note.split()[0] for note in found.ignored] == ["backup.pahts", "health_check"]
    assert "did you mean backup.paths?" in found.ignored[0]


def test_a_deployed_manifest_is_refused_for_any_other_mistake(tmp_path):
    text = GOOD.replace('tag: "2"', "tag: 2.10") + "backup: {pahts: [/srv]}\n"
    with pytest.raises(ConfigError, match=r"image\.tag"):
        _load(tmp_path, text)
    with pytest.raises(ConfigError, match=r"image\.tag"):
        manifest.load(tmp_path, "web", deployed=True)


def test_a_deployed_manifest_with_a_repeated_key_is_read_as_an_older_engine_read_it(tmp_path):
    text = GOOD + "backup: {volumes: [a]}\nbackup: {volumes: [b]}\n"
    with pytest.raises(ConfigError, match=r"backup"):
        _load(tmp_path, text)
    assert manifest.load(tmp_path, "web", deployed=True).backup.volumes == ("b",)
