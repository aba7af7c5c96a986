"""Fuzzing the three readers of files a person can edit: a manifest, the state file and a
backup record. Whatever they are given (random text or bytes, random YAML or JSON, a
valid document with a key renamed, a value retyped, a key dropped, or its text cut
short), each ends in a value or in the project's error naming the file, and the key
when there is one; never in another exception.

The quick run (CI) tries a few dozen examples per strategy; `--full` tries thousands.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from release_phases import manifest, state
from release_phases.backup.record import BackupRecord
from release_phases.errors import ConfigError, ReleaseError
from release_phases.schema import dotted

settings.register_profile(
    "fuzz-quick",
    max_examples=40,
    deadline=None,
    # No example database: the worktree stays clean, and a failure prints the example
    # that fails, which is what reproduces it.
    database=None,
    # The selftests share the machine with Docker builds: slow generation there says
    # nothing about the readers.
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("fuzz-full", settings.get_profile("fuzz-quick"), max_examples=2_000)

Path_ = tuple[int | str, ...]


@pytest.fixture
def fuzz(request: pytest.FixtureRequest) -> Callable[..., None]:
    """`fuzz(strategy, check)`: run `check` on examples of `strategy`. The profile is
    chosen here, when the test runs, since `--full` is an option of the run."""
    profile = settings.get_profile(
        "fuzz-full" if request.config.getoption("full") else "fuzz-quick"
    )

    def run(strategy: st.SearchStrategy[Any], check: Callable[[Any], None]) -> None:
        @profile
        @given(strategy)
        def examples(value: Any) -> None:
            check(value)

        examples()

    return run


# -- building blocks -------------------------------------------------------------------------

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)

#: A file's content: any bytes, or any text (valid UTF-8, more likely to parse).
BYTES = st.binary(max_size=300) | st.text(max_size=300).map(str.encode)


def structures(scalars: st.SearchStrategy[Any], keys: list[str]) -> st.SearchStrategy[Any]:
    """Nested lists and mappings whose keys are mostly the document's own, so the random
    values reach the checks behind them."""
    key = st.sampled_from(keys) | st.text(max_size=12)
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(key, inner, max_size=6),
        max_leaves=25,
    )


def paths_of(doc: Any, prefix: Path_ = ()) -> list[Path_]:
    """Every location in a document: each mapping key and each list item, depth first."""
    found: list[Path_] = []
    items = (
        doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else []
    )
    for key, value in items:
        found.append((*prefix, key))
        found += paths_of(value, (*prefix, key))
    return found


def _parent(doc: Any, path: Path_) -> Any:
    for part in path[:-1]:
        doc = doc[part]
    return doc


@st.composite
def mutations(draw: st.DrawFn, valid: dict[str, Any], scalars: st.SearchStrategy[Any]) -> Any:
    """(how, path, new document): one key renamed, one value retyped, or one key dropped."""
    doc = copy.deepcopy(valid)
    path = draw(st.sampled_from(paths_of(doc)))
    parent = _parent(doc, path)
    how = draw(
        st.sampled_from(["rename", "retype", "drop"] if isinstance(parent, dict) else ["retype"])
    )
    if how == "rename":
        old = path[-1]
        new = draw(st.text(min_size=1, max_size=12).filter(lambda k: k not in parent))
        parent[new] = parent.pop(old)
        path = (*path[:-1], new)
    elif how == "retype":
        parent[path[-1]] = draw(scalars | st.lists(scalars, max_size=3) | st.just({}))
    else:
        del parent[path[-1]]
    return how, path, doc


def names(message: str, path: Path_) -> bool:
    """Whether an error message names the location: `backup.dump.command[0]`, or the
    mapping that holds it (a dropped key is named by what is then missing or wrong)."""
    return dotted(path) in message


# -- the manifest ----------------------------------------------------------------------------

SOURCE = "packages/web/manifest.yaml"
MANIFEST_KEYS = [
    "image", "name", "tag", "health", "endpoint", "expected_code", "tcp", "docker", "command",
    "timeout", "containers", "compose_file", "backup", "volumes", "paths", "dump", "restore",
    "when", "e2e", "enabled",
]  # fmt: skip
VALID_MANIFEST: dict[str, Any] = {
    "image": {"name": "demo/web", "tag": "2"},
    "containers": ["web", "worker"],
    "compose_file": "compose.yaml",
    "health": {
        "endpoint": "http://127.0.0.1:18080/health",
        "expected_code": 200,
        "tcp": "127.0.0.1:5432",
        "docker": True,
        "command": ["pg_isready", "-U", "app"],
        "timeout": 30,
    },
    "backup": {
        "volumes": ["web-data"],
        "paths": ["/srv/data"],
        "dump": {"command": ["pg_dump", "app"], "restore": ["pg_restore", "-d", "app"]},
        "when": "prepare",
    },
    "e2e": {"enabled": False},
}


def parse_manifest(text: str) -> manifest.Manifest | ConfigError:
    """The manifest or its ConfigError; any other exception fails the test."""
    try:
        return manifest.parse(
            text,
            service="web",
            package_dir=Path("/deploy/packages/web"),
            source=SOURCE,
            exists=lambda name: name == "compose.yaml",
        )
    except ConfigError as exc:
        assert SOURCE in exc.what, exc.what
        return exc


def test_the_valid_manifest_the_fuzzers_start_from_is_valid() -> None:
    found = parse_manifest(yaml.safe_dump(VALID_MANIFEST))
    assert isinstance(found, manifest.Manifest), found
    assert found.health.kinds == ("endpoint", "tcp", "docker", "command")
    assert found.backup.dump is not None and found.containers == ("web", "worker")


@pytest.mark.reliability("bad input", "fuzz: random text as a manifest")
def test_random_text_as_a_manifest(fuzz) -> None:
    fuzz(st.text(max_size=200), parse_manifest)


@pytest.mark.reliability("bad input", "fuzz: random bytes in manifest.yaml")
def test_random_bytes_in_a_manifest_file(fuzz, tmp_path: Path) -> None:
    package = tmp_path / "packages" / "web"
    package.mkdir(parents=True)
    (package / "compose.yaml").write_text("services: {}\n")

    def check(data: bytes) -> None:
        (package / "manifest.yaml").write_bytes(data)
        try:
            manifest.load(tmp_path, "web")
        except ConfigError as exc:
            assert SOURCE in exc.what, exc.what

    fuzz(BYTES, check)


@pytest.mark.reliability("bad input", "fuzz: random YAML structures as a manifest")
def test_random_yaml_structures_as_a_manifest(fuzz) -> None:
    fuzz(structures(SCALARS, MANIFEST_KEYS).map(yaml.safe_dump), parse_manifest)


@pytest.mark.reliability("bad input", "fuzz: a valid manifest, one key renamed/retyped/dropped")
def test_a_mutated_manifest_is_refused_naming_the_key_or_read(fuzz) -> None:
    def check(mutation: tuple[str, Path_, dict[str, Any]]) -> None:
        how, path, doc = mutation
        found = parse_manifest(yaml.safe_dump(doc))
        if how == "rename":
            # A key the manifest does not know is never ignored: it is named.
            assert isinstance(found, ConfigError), (path, found)
            assert f"{dotted(path)} is not a known key" in found.what, (path, found.what)
        elif isinstance(found, ConfigError) and how == "retype":
            assert names(found.what, path), (path, found.what)
        elif isinstance(found, ConfigError):
            # A dropped key is named itself (required), or by the mapping that held it.
            assert names(found.what, path[:-1]) or names(found.what, path), (path, found.what)

    fuzz(mutations(VALID_MANIFEST, SCALARS), check)


@pytest.mark.reliability("bad input", "fuzz: a valid manifest cut short")
def test_a_manifest_cut_short_is_refused_or_read(fuzz) -> None:
    text = yaml.safe_dump(VALID_MANIFEST)
    fuzz(st.integers(min_value=0, max_value=len(text)).map(lambda end: text[:end]), parse_manifest)


# -- the state file --------------------------------------------------------------------------

TICKET = "1234"
VALID_STATE = state.State(
    ticket=TICKET,
    base_sha="a" * 40,
    merge_sha="b" * 40,
    branch="main",
    services=["api", "web"],
    backups={"api": "20260518_153012", "web": "20260518_153015"},
    images={"api": "sha256:" + "c" * 64, "web/search": "sha256:" + "d" * 64},
    timestamps={"PREPARE_START": "2026-05-18T15:29:00Z", "PREPARE_DONE": "2026-05-18T15:30:12Z"},
    extra={"REVERT_SHA": "e" * 40},
    phase="prepare",
    phase_status="done",
)


def read_state(path: Path, data: bytes) -> state.State | ConfigError:
    """The state or its ConfigError naming the file; a state read is whole: written
    again and read back, it is the same."""
    path.write_bytes(data)
    try:
        found = state.load(path, TICKET)
    except ConfigError as exc:
        assert str(path) in exc.what, exc.what
        return exc
    assert state.State.from_text(found.to_text(), str(path)) == found
    return found


@pytest.mark.reliability("bad input", "fuzz: random bytes as a state file")
def test_random_bytes_as_a_state_file(fuzz, tmp_path: Path) -> None:
    path = tmp_path / f"{TICKET}.env"
    fuzz(
        st.binary(max_size=300) | st.text(max_size=300).map(str.encode),
        lambda b: read_state(path, b),
    )


@st.composite
def state_lines(draw: st.DrawFn) -> bytes:
    """KEY=value lines with mostly known keys and values of the right alphabet."""
    known = sorted(state.KNOWN_KEYS)
    key = st.sampled_from(known) | st.from_regex(r"[A-Z][A-Z0-9_]{0,12}", fullmatch=True)
    value = st.sampled_from(VALID_STATE.to_text().split("\n")).map(
        lambda line: line.partition("=")[2]
    ) | st.text(max_size=20)
    lines = draw(st.lists(st.tuples(key, value), max_size=20))
    return "".join(f"{k}={v}\n" for k, v in lines).encode()


@pytest.mark.reliability("bad input", "fuzz: random KEY=value lines as a state file")
def test_random_pairs_as_a_state_file(fuzz, tmp_path: Path) -> None:
    path = tmp_path / f"{TICKET}.env"
    fuzz(state_lines(), lambda b: read_state(path, b))


@st.composite
def state_mutations(draw: st.DrawFn) -> tuple[str, str, str, bytes]:
    """(how, the key touched, its new name, file): a line's key renamed, its value
    changed, the line dropped or repeated, or the file cut short."""
    lines = VALID_STATE.to_text().split("\n")[:-1]
    index = draw(st.integers(min_value=0, max_value=len(lines) - 1))
    key, _, value = lines[index].partition("=")
    new_key = key
    how = draw(st.sampled_from(["rename", "revalue", "drop", "repeat", "cut"]))
    if how == "rename":
        new_key = draw(st.from_regex(r"[A-Z][A-Z0-9_]{0,20}", fullmatch=True))
        lines[index] = f"{new_key}={value}"
    elif how == "revalue":
        lines[index] = f"{key}={draw(st.text(max_size=30).filter(lambda v: chr(10) not in v))}"
    elif how == "drop":
        del lines[index]
    elif how == "repeat":
        lines.insert(index, lines[index])
    text = "".join(f"{line}\n" for line in lines)
    if how == "cut":
        text = text[: draw(st.integers(min_value=0, max_value=len(text) - 1))]
    return how, key, new_key, text.encode()


@pytest.mark.reliability("bad input", "fuzz: a valid state file, one line changed or cut")
def test_a_mutated_state_file_is_refused_naming_the_key_or_read(fuzz, tmp_path: Path) -> None:
    path = tmp_path / f"{TICKET}.env"

    def check(mutation: tuple[str, str, str, bytes]) -> None:
        how, key, new_key, data = mutation
        found = read_state(path, data)
        if how == "repeat":
            assert isinstance(found, ConfigError) and f"{key} is set twice" in found.what
        elif how == "cut":
            # Known limit: a cut exactly at a line boundary that only loses optional
            # lines (REVERT_SHA, a START time) leaves a file that is whole as far as it
            # goes; every other cut is refused.
            assert isinstance(found, ConfigError) or data.endswith(b"\n"), data
        elif how == "rename" and new_key not in state.KNOWN_KEYS:
            assert isinstance(found, ConfigError), data
            assert f"{new_key} is not a key of a state file" in found.what, found.what
        elif isinstance(found, ConfigError):
            named = found.what if key != "TICKET" else found.what.replace("ticket", "TICKET")
            assert key in named or new_key in named, (how, key, new_key, found.what)

    fuzz(state_mutations(), check)


# -- the backup record -----------------------------------------------------------------------

STAMP = "20240101_000000"
RECORD_KEYS = [
    "format", "service", "stamp", "project", "taken_at", "note", "nothing_declared", "entries",
    "kind", "name", "target", "absent", "archive", "sha256", "container", "volume", "dump",
    "driver", "options", "labels", "command", "restore",
]  # fmt: skip
VALID_RECORD: dict[str, Any] = {
    "format": 1,
    "service": "db",
    "stamp": STAMP,
    "project": "proj",
    "taken_at": "2024-01-01T00:00:00Z",
    "note": "",
    "nothing_declared": False,
    "entries": [
        {
            "kind": "volume",
            "name": "data",
            "target": "proj_data",
            "absent": False,
            "archive": "01-volume-data.tar",
            "sha256": "f" * 64,
            "container": "",
            "volume": {"driver": "local", "options": {"o": "bind"}, "labels": {"a": "b"}},
            "dump": None,
        },
        {
            "kind": "dump",
            "name": "pg_dump app",
            "target": "db",
            "absent": True,
            "archive": None,
            "sha256": None,
            "container": "proj-db-1",
            "volume": None,
            "dump": {"command": ["pg_dump", "app"], "restore": ["pg_restore", "-d", "app"]},
        },
    ],
}


def read_record(directory: Path, data: bytes) -> BackupRecord | ReleaseError:
    """The record or its ReleaseError naming the file. (Not a ConfigError: a revert reads
    records after its first steps, so "nothing was changed" would not be true; the error
    says what was left as it was.)"""
    (directory / "record.json").write_bytes(data)
    try:
        return BackupRecord.load(directory, "db", STAMP)
    except ReleaseError as exc:
        assert str(directory / "record.json") in exc.what, exc.what
        assert "nothing was restored" in exc.untouched
        return exc


@pytest.fixture
def record_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "db" / STAMP
    directory.mkdir(parents=True)
    return directory


def test_the_valid_record_the_fuzzers_start_from_is_valid(record_dir: Path) -> None:
    found = read_record(record_dir, json.dumps(VALID_RECORD).encode())
    assert isinstance(found, BackupRecord), found
    assert [e.kind for e in found.entries] == ["volume", "dump"]


@pytest.mark.reliability("bad input", "fuzz: random bytes as a backup record")
def test_random_bytes_as_a_record(fuzz, record_dir: Path) -> None:
    fuzz(
        st.binary(max_size=300) | st.text(max_size=300).map(str.encode),
        lambda b: read_record(record_dir, b),
    )


@pytest.mark.reliability("bad input", "fuzz: random JSON structures as a backup record")
def test_random_json_structures_as_a_record(fuzz, record_dir: Path) -> None:
    def check(doc: Any) -> None:
        if isinstance(doc, dict):
            doc = {"format": 1, **doc}  # past the format check, to the keys behind it
        read_record(record_dir, json.dumps(doc).encode())

    fuzz(structures(JSON_SCALARS, RECORD_KEYS), check)


@pytest.mark.reliability("bad input", "fuzz: a valid record, one key renamed/retyped/dropped")
def test_a_mutated_record_is_refused_naming_the_key_or_read(fuzz, record_dir: Path) -> None:
    def check(mutation: tuple[str, Path_, dict[str, Any]]) -> None:
        how, path, doc = mutation
        found = read_record(record_dir, json.dumps(doc).encode())
        free_form = path[-2:-1] in (("options",), ("labels",))  # any key is a volume's own
        if how == "rename" and not free_form:
            assert isinstance(found, ReleaseError), (path, found)
            said = "format is None" if "format" not in doc else f"{dotted(path)} is not a known"
            assert said in found.what, (path, found.what)
        elif isinstance(found, ReleaseError) and path[0] not in ("format", "service", "stamp"):
            assert names(found.what, path) or names(found.what, path[:-1]), (path, found.what)

    fuzz(mutations(VALID_RECORD, JSON_SCALARS), check)


@pytest.mark.reliability("bad input", "fuzz: a valid record cut short")
def test_a_record_cut_short_is_refused(fuzz, record_dir: Path) -> None:
    text = json.dumps(VALID_RECORD, indent=2)

    def check(end: int) -> None:
        assert isinstance(read_record(record_dir, text[:end].encode()), ReleaseError)

    fuzz(st.integers(min_value=0, max_value=len(text) - 1), check)


def test_the_fuzz_helpers_find_every_location() -> None:
    assert paths_of({"a": [1, {"b": 2}]}) == [("a",), ("a", 0), ("a", 1), ("a", 1, "b")]
    assert dotted(("backup", "dump", "command", 0)) == "backup.dump.command[0]"
