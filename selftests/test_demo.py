"""`release-phases demo`, run for real: the release completes, `--fail` fails and is
reverted with the data back, `--clean` leaves nothing behind.

The demo runs under a name of this run's own (`demo<run id>`) and in a temporary
directory, so a user's own demo on this host is never touched.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from release_phases import eventlog
from release_phases.demo import layout as demo_layout
from release_phases.demo.layout import SEED_RECORDS, Layout, marker_owner, marker_text
from release_phases.demo.prerequisites import is_static_elf
from release_phases.demo.teardown import check_directory
from release_phases.errors import ReleaseError
from release_phases.state import State
from selftests.conftest import REPO_ROOT, RUN_ID

NAME = f"demo{RUN_ID}"


def demo(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    env.pop("PYTEST_ADDOPTS", None)
    return subprocess.run(
        [sys.executable, "-m", "release_phases", "demo", "--name", NAME, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def shown(done: subprocess.CompletedProcess[str]) -> str:
    return f"$ {' '.join(map(str, done.args))} -> rc {done.returncode}\n{done.stdout}"


# -- the ticket scripts: one set of files, installed with the package ---------------------


def test_the_packaged_ticket_scripts_are_the_top_level_ones() -> None:
    top = REPO_ROOT / "releases"
    packaged = REPO_ROOT / "release_phases" / "demo" / "releases"
    scripts = sorted(p.name for p in top.glob(f"{demo_layout.TICKET}-*"))
    assert len(scripts) == 2 and {Path(s).suffix for s in scripts} == {".sh", ".py"}
    assert sorted(p.name for p in packaged.iterdir()) == scripts, (
        f"copy them: cp releases/{demo_layout.TICKET}-* release_phases/demo/releases/"
    )
    for name in scripts:
        assert filecmp.cmp(top / name, packaged / name, shallow=False), (
            f"releases/{name} and its packaged copy differ: "
            f"cp releases/{name} release_phases/demo/releases/"
        )
        assert os.access(packaged / name, os.X_OK)


def test_an_installed_package_finds_the_scripts_without_this_repository(tmp_path: Path) -> None:
    """What `pip install .` installs: setuptools' build_py copies the packages and their
    package data as a wheel would; the demo then finds its scripts there alone."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        (source / name).write_bytes((REPO_ROOT / name).read_bytes())
    shutil.copytree(REPO_ROOT / "release_phases", source / "release_phases")
    built = subprocess.run(
        [sys.executable, "-c", "from setuptools import setup; setup()", "-q",
         "build_py", "--build-lib", str(tmp_path / "lib")],
        cwd=source, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    shutil.rmtree(source)
    found = subprocess.run(
        [sys.executable, "-c", "from release_phases.demo.repo import ticket_scripts\n"
         "import release_phases\nprint(release_phases.__file__)\n"
         "for name, _ in ticket_scripts(): print(name)"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path / "lib")},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert found.returncode == 0, found.stderr
    where, *names = found.stdout.splitlines()
    assert where.startswith(str(tmp_path / "lib"))
    assert names == sorted(p.name for p in (REPO_ROOT / "releases").glob("DEMO-1-*"))


def test_the_console_script_is_release_phases_cli_main() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"] == {"release-phases": "release_phases.cli:main"}
    from release_phases.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--help"])
    assert exit_info.value.code == 0


# -- the demo's names and its directory ------------------------------------------------------


def test_a_demo_owns_names_of_its_own() -> None:
    one, other = Layout("demo", Path("/x")), Layout("demo2", Path("/y"))
    assert one.projects == ("rpdemo-db", "rpdemo-web", "rpdemo-worker")
    assert one.image("web", "1") == "release-phases-demo/web:1"
    assert not set(one.projects) & set(other.projects)
    assert one.label == "io.release-phases.demo=demo" != other.label
    for bad in ("", "Demo", "1demo", "de-mo", "de mo", "a" * 31):
        assert not demo_layout.valid_name(bad), bad
        with pytest.raises(ValueError):
            Layout(bad, Path("/x"))


def test_only_a_directory_the_demo_marked_is_emptied(tmp_path: Path) -> None:
    layout = Layout("demo", tmp_path / "d")
    assert check_directory(layout) is False  # absent
    layout.root.mkdir()
    assert check_directory(layout) is False  # empty
    (layout.root / "notes.txt").write_text("mine\n")
    with pytest.raises(ReleaseError, match="not made by `release-phases demo`"):
        check_directory(layout)
    layout.marker.write_text(marker_text("other"))
    with pytest.raises(ReleaseError, match="holds the demo named 'other'"):
        check_directory(layout)
    layout.marker.write_text(marker_text("demo"))
    assert check_directory(layout) is True
    assert marker_owner("name=../x\n") is None


def test_a_static_busybox_is_told_from_a_dynamic_binary(tmp_path: Path) -> None:
    assert not is_static_elf(Path(sys.executable).resolve())  # has an interpreter
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    assert not is_static_elf(script)
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        if Path(candidate).exists():
            assert is_static_elf(Path(candidate))


# -- for real ---------------------------------------------------------------------------------


def _state(root: Path) -> State:
    path = root / "prod" / ".asd" / "workspace" / "releases" / f"{demo_layout.TICKET}.env"
    return State.from_text(path.read_text(), str(path))


def _events(root: Path) -> list[dict[str, str]]:
    path = root / "prod" / ".asd" / "workspace" / "releases" / f"{demo_layout.TICKET}.log"
    return [eventlog.parse_line(line) for line in path.read_text().splitlines()]


def _labelled(docker_client) -> dict[str, list[str]]:
    label = {"label": f"{demo_layout.LABEL}={NAME}"}
    return {
        "containers": [c.name for c in docker_client.containers.list(all=True, filters=label)],
        "volumes": [v.name for v in docker_client.volumes.list(filters=label)],
        "networks": [n.name for n in docker_client.networks.list(filters=label)],
        "images": [i.id for i in docker_client.images.list(all=True, filters=label)],
    }


@pytest.fixture
def demo_dir(tmp_path: Path, docker_client):
    """The demo's directory; whatever the test did, the demo is cleaned at the end."""
    root = tmp_path / "demo"
    yield root
    if any(_labelled(docker_client).values()) or root.exists():
        demo("--dir", str(root), "--clean", timeout=120)


@pytest.mark.docker
def test_the_demo_releases_fails_and_reverts_then_cleans_up(demo_dir, docker_client) -> None:
    released = demo("--dir", str(demo_dir))
    assert released.returncode == 0, shown(released)
    state = _state(demo_dir)
    assert (state.phase, state.phase_status) == ("verify", "done"), shown(released)
    assert state.services == ["db", "web"]
    backup = demo_dir / "prod/.asd/workspace/backups/db" / state.backups["db"]
    assert {"record.json", "SHA256SUMS"} < {p.name for p in backup.iterdir()}, "no db-data?"
    assert "pytest -m release --ticket DEMO-1 --from=verify" in released.stdout
    assert "pytest -m revert --ticket DEMO-1" in released.stdout
    report = next((demo_dir / "prod" / "reports").glob("DEMO-1-release-*.html"))
    assert f"report:     {report}" in released.stdout
    db = docker_client.containers.list(
        filters={"label": f"com.docker.compose.project=rp{NAME}-db"}
    )[0]
    assert db.exec_run(["cat", "/data/records.csv"]).output.decode() == (
        "1,ada,ada@example.invalid\n2,grace,grace@example.invalid\n3,linus,linus@example.invalid\n"
    )

    failed = demo("--dir", str(demo_dir), "--fail")
    assert failed.returncode == 0, shown(failed)
    # The rerun started over: a new repository, whose release failed in migrate on web.
    migrate_failed = [e for e in _events(demo_dir) if e["event"] == "failed"]
    assert [(e["phase"], e.get("service")) for e in migrate_failed] == [("migrate", "web")]
    state = _state(demo_dir)
    assert (state.phase, state.phase_status) == ("revert", "done"), shown(failed)
    db = docker_client.containers.list(
        filters={"label": f"com.docker.compose.project=rp{NAME}-db"}
    )[0]
    assert db.exec_run(["cat", "/data/records.csv"]).output.decode() == SEED_RECORDS
    web = docker_client.containers.list(
        filters={"label": f"com.docker.compose.project=rp{NAME}-web"}
    )[0]
    assert web.image.tags == [f"release-phases-{NAME}/web:1"]
    assert "the revert restored version 1 and db's data" in failed.stdout

    cleaned = demo("--dir", str(demo_dir), "--clean")
    assert cleaned.returncode == 0, shown(cleaned)
    assert _labelled(docker_client) == {
        "containers": [], "volumes": [], "networks": [], "images": []
    }  # fmt: skip
    for project in (f"rp{NAME}-{s}" for s in demo_layout.SERVICES):
        by_project = {"label": f"com.docker.compose.project={project}"}
        assert not docker_client.containers.list(all=True, filters=by_project)
        assert not docker_client.volumes.list(filters=by_project)
    assert not demo_dir.exists()


@pytest.mark.docker
def test_the_demo_leaves_a_directory_it_did_not_make(tmp_path: Path, docker_client) -> None:
    (tmp_path / "precious.txt").write_text("not the demo's\n")
    refused = demo("--dir", str(tmp_path))
    assert refused.returncode == 2, shown(refused)
    assert "was not made by `release-phases demo`" in refused.stdout
    assert (tmp_path / "precious.txt").read_text() == "not the demo's\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious.txt"]
