"""README.md's commands, run for real.

Every fenced block of README.md names its language; every command of a ```sh block
is either run here, in the order an operator could type them, or carries the reason
it cannot be: a trailing `# not run in tests: <why>`, or the same words in the
paragraph just before its block. A ```sh command that is neither fails the test, and
so does a command this test runs that README no longer shows.

The commands run after a demo of this test's own (its own name and directory, so a
user's demo is never touched), in one bash session in the demo's prod clone, as an
operator who followed the demo would type them; each must exit as README says.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from release_phases.demo import layout as demo_layout
from release_phases.state import State
from selftests.conftest import REPO_ROOT, RUN_ID

README = REPO_ROOT / "README.md"
NAME = f"readme{RUN_ID}"
TAGS = ("sh", "yaml", "text")
#: The reason runs to the end of the comment, or of the parenthesis it is written in.
REASON = re.compile(r"not run in tests:([^)]*)", re.IGNORECASE)
#: Where README's demo lives (`release-phases demo`'s default directory); this test's
#: demo lives elsewhere, and its directory stands in for this one.
README_DEMO_DIR = "~/.cache/release-phases/demo"
#: README's way to run the demo; here it is this Python running the package in this tree.
DEMO_COMMANDS = (".venv/bin/release-phases demo", "release-phases demo")


# -- reading README ---------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    tag: str
    #: The line of the opening fence, counted from 1.
    line: int
    lines: tuple[str, ...]
    #: The paragraph just before the block (its lines joined), which may say why the
    #: whole block is not run.
    before: str


@dataclass(frozen=True)
class Command:
    text: str
    line: int
    #: Why it is not run: None when nothing says so, "" when the marker has no reason.
    reason: str | None
    #: The comment after the command, if any.
    comment: str


def blocks(markdown: str) -> list[Block]:
    """The fenced blocks of ``markdown``, with the paragraph before each."""
    found: list[Block] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        opening = re.fullmatch(r"```(\S*)\s*", lines[i])
        if opening is None:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
        assert end is not None, f"README.md:{i + 1}: a fenced block that is never closed"
        paragraph: list[str] = []
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        while k >= 0 and lines[k].strip() and not lines[k].startswith("```"):
            paragraph.insert(0, lines[k].strip())
            k -= 1
        found.append(Block(opening.group(1), i + 1, tuple(lines[i + 1 : end]), " ".join(paragraph)))
        i = end + 1
    return found


def _reason(text: str) -> str | None:
    found = REASON.search(text)
    return None if found is None else found.group(1).strip().rstrip(":.").strip()


def commands(block: Block) -> list[Command]:
    """The commands of an sh block: one a line, with the reason it is not run, if any."""
    whole = _reason(block.before)
    found = []
    for offset, raw in enumerate(block.lines, start=1):
        if not raw.strip():
            continue
        # README's commands hold no `#` of their own: the first one after a blank
        # starts the comment.
        text, _, comment = re.split(r"(\s+#)", raw, maxsplit=1) if " #" in raw else (raw, "", "")
        comment = comment.strip()
        own = _reason(comment)
        found.append(
            Command(" ".join(text.split()), block.line + offset, own if own is not None else whole,
                    comment)
        )  # fmt: skip
    return found


def readme_commands() -> list[Command]:
    return [c for b in blocks(README.read_text()) if b.tag == "sh" for c in commands(b)]


# -- what this test runs, and how it maps README's words to this tree ----------------------

DEMO = ".venv/bin/release-phases demo"
CD = f"cd {README_DEMO_DIR}/prod"
#: README's commands run in one bash session in the demo's prod clone after its
#: release completed, in this order, with the exit code each gives there.
AFTER_THE_RELEASE: tuple[tuple[str, int], ...] = (
    (CD, 0),
    ("pytest -m release --ticket DEMO-1 -k verify", 0),
    ('pytest -m release --ticket DEMO-1 -k "verify and web"', 0),
    ("pytest -m release --ticket DEMO-1 --from=verify", 0),
    ("pytest -m release --ticket DEMO-1 --from=ticket", 0),
    ("pytest -m release --ticket DEMO-1 --from=migrate", 0),
    ("pytest -m release --ticket DEMO-1 --from=migrate --parallel 2", 0),
    ("tail -n 5 .asd/workspace/releases/DEMO-1.log", 0),
    ("tail -n 1 .asd/workspace/releases/DEMO-1.log", 0),
    # Released, and origin has nothing new: refused, nothing changed.
    ("pytest -m release --ticket DEMO-1", 4),
    # Not after a hotfix: prod is on main, with nothing to return from.
    ("pytest -m return_to_main", 1),
    ("pytest -m revert --ticket DEMO-1", 0),
)
#: After a new demo (a release completed again): the same code deployed again on
#: purpose, as the recovery of a prepare that failed after its pull does. Not before
#: the revert above: its new backups hold the data as migrated, which a revert would
#: then restore under version 1.
AFTER_A_NEW_RELEASE: tuple[tuple[str, int], ...] = (
    (CD, 0),
    (". .asd/workspace/releases/DEMO-1.env", 0),
    ('pytest -m release --ticket DEMO-1 --base-sha "$BASE_SHA"', 0),
)
#: README's demo commands, each run alone.
DEMO_RUNS: tuple[tuple[str, int], ...] = ((DEMO, 0), (f"{DEMO} --fail", 0), (f"{DEMO} --clean", 0))
EXPECTED = dict(AFTER_THE_RELEASE + AFTER_A_NEW_RELEASE + DEMO_RUNS)

#: README writes `pytest` as an operator types it; here it is this Python's pytest,
#: without hypothesis's plugin (a dev extra a deploy host does not have; see
#: selftests/support/engine.py TEST_INI).
PRELUDE = 'pytest() { "$README_PYTHON" -m pytest -p no:hypothesispytest "$@"; }\n'


def demo_argv(command: str, root: Path) -> list[str]:
    """README's `release-phases demo ...`, run from this tree under this test's name."""
    prefix = next(p for p in DEMO_COMMANDS if command == p or command.startswith(p + " "))
    rest = shlex.split(command[len(prefix) :])
    named = ["--name", NAME, "--dir", str(root)]
    return [sys.executable, "-m", "release_phases", "demo", *rest, *named]


def shell_line(command: str, root: Path) -> str:
    """README's command as this test's shell runs it: README's demo directory is ours."""
    return command.replace(README_DEMO_DIR, shlex.quote(str(root)))


def clean_env() -> dict[str, str]:
    env = {**os.environ, "README_PYTHON": sys.executable}
    # An operator's command does not carry the options this pytest run was given.
    env.pop("PYTEST_ADDOPTS", None)
    return env


def said_exit(comment: str) -> int | None:
    """The exit code README's comment says the command gives there (`exit 4`), if any."""
    found = re.search(r"\bexit (\d+)\b", comment)
    return int(found.group(1)) if found else None


# -- README's shape, without Docker -----------------------------------------------------------


def test_every_fenced_block_names_its_language() -> None:
    found = blocks(README.read_text())
    assert found, "README.md has no fenced block?"
    untagged = [f"README.md:{b.line} ```{b.tag}" for b in found if b.tag not in TAGS]
    assert not untagged, f"tag each block with one of {TAGS}: {untagged}"


def test_every_sh_command_is_run_here_or_says_why_not() -> None:
    found = readme_commands()
    empty = [f"README.md:{c.line}: {c.text}" for c in found if c.reason == ""]
    assert not empty, f"'not run in tests:' without a reason: {empty}"
    handled = set(EXPECTED)
    shown = {c.text for c in found if c.reason is None}
    unhandled = sorted(shown - handled)
    assert not unhandled, (
        f"README.md shows commands this test neither runs nor is told why not: {unhandled}; "
        "run them in selftests/test_readme.py, or add `# not run in tests: <why>`"
    )
    stale = sorted(handled - shown)
    assert not stale, f"this test runs commands README.md no longer shows: {stale}"
    for c in found:
        if c.reason is None and said_exit(c.comment) is not None:
            expected = EXPECTED[c.text]
            assert said_exit(c.comment) == expected, f"README.md:{c.line}: {c.comment}"


SAMPLE = """\
Set it up (not run in tests: it sets up the machine):

```sh
bash .ci/setup
```

Then:

```sh
pytest -m release --ticket DEMO-1 -k verify
pip install .    # not run in tests: installs into this Python
docker image rm x    # not run in tests:
```

```
untagged
```
"""


def test_the_reasons_are_read_from_the_line_or_the_paragraph_before() -> None:
    found = blocks(SAMPLE)
    assert [b.tag for b in found] == ["sh", "sh", ""]
    (setup,) = commands(found[0])
    assert (setup.text, setup.reason) == ("bash .ci/setup", "it sets up the machine")
    run, install, remove = commands(found[1])
    assert (run.text, run.reason) == ("pytest -m release --ticket DEMO-1 -k verify", None)
    assert run.line == 10
    assert (install.text, install.reason) == ("pip install .", "installs into this Python")
    assert (remove.text, remove.reason) == ("docker image rm x", "")
    assert said_exit("# refused (exit 4), already released") == 4
    assert said_exit("# the checks again") is None


def test_readme_demo_and_shell_lines_map_to_this_tree(tmp_path: Path) -> None:
    argv = demo_argv(".venv/bin/release-phases demo --fail", tmp_path)
    assert argv == [sys.executable, "-m", "release_phases", "demo", "--fail", "--name", NAME,
                    "--dir", str(tmp_path)]  # fmt: skip
    with pytest.raises(StopIteration):
        demo_argv("release-phases demolish", tmp_path)
    assert shell_line(f"cd {README_DEMO_DIR}/prod", tmp_path / "a b") == f"cd '{tmp_path}/a b'/prod"


# -- README's commands, for real ----------------------------------------------------------------


@pytest.fixture
def demo_dir(tmp_path: Path, docker_client) -> Iterator[Path]:
    """This test's demo directory; whatever the test did, the demo is cleaned at the end."""
    root = tmp_path / "demo"
    yield root
    label = {"label": f"{demo_layout.LABEL}={NAME}"}
    if root.exists() or docker_client.containers.list(all=True, filters=label):
        subprocess.run(
            demo_argv(f"{DEMO} --clean", root), env=clean_env(), timeout=120, check=False
        )


def run_in_one_shell(commands: list[str], root: Path) -> list[tuple[str, int, str]]:
    """Run ``commands`` in one bash session, as typed one after the other: each one's
    exit code and output."""
    script = PRELUDE
    for n, command in enumerate(commands):
        script += f"echo '@@@ {n} begins'\n{shell_line(command, root)}\necho \"@@@ {n} rc=$?\"\n"
    done = subprocess.run(
        ["bash", "-c", script], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env=clean_env(), timeout=900, check=False,
    )  # fmt: skip
    results = []
    for n, command in enumerate(commands):
        found = re.search(
            rf"^@@@ {n} begins\n(.*?)^@@@ {n} rc=(\d+)$", done.stdout, re.MULTILINE | re.DOTALL
        )
        assert found, f"the shell stopped before `{command}`:\n{done.stdout[-3000:]}"
        results.append((command, int(found.group(2)), found.group(1)))
    return results


def run_demo(command: str, root: Path, timeout: float = 300) -> str:
    """README's demo command, run; its output, once it exited as README says."""
    done = subprocess.run(
        demo_argv(command, root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=clean_env(), timeout=timeout, check=False,
    )  # fmt: skip
    assert done.returncode == EXPECTED[command], (
        f"$ {command}  -> rc {done.returncode}\n{done.stdout}"
    )
    return done.stdout


def run_session(runs: tuple[tuple[str, int], ...], root: Path) -> dict[str, str]:
    """README's commands in one shell, each exiting as README says; their outputs."""
    results = run_in_one_shell([command for command, _ in runs], root)
    for (command, rc, output), (_, expected) in zip(results, runs, strict=True):
        assert rc == expected, f"$ {command}  -> rc {rc}, README says {expected}\n{output}"
    return {command: output for command, _, output in results}


def read_state(root: Path) -> State:
    path = root / "prod/.asd/workspace/releases/DEMO-1.env"
    return State.from_text(path.read_text(), str(path))


@pytest.mark.docker
def test_readme_commands_run_in_the_demo_and_exit_as_it_says(demo_dir: Path) -> None:
    run_demo(DEMO, demo_dir)
    released = read_state(demo_dir)
    assert (released.phase, released.phase_status) == ("verify", "done")

    outputs = run_session(AFTER_THE_RELEASE, demo_dir)
    refused = outputs["pytest -m release --ticket DEMO-1"]
    assert f"ticket DEMO-1 is already released at MERGE_SHA {released.merge_sha}" in refused
    assert "is already on main: there is no hotfix" in outputs["pytest -m return_to_main"]
    reverted = read_state(demo_dir)
    assert (reverted.phase, reverted.phase_status) == ("revert", "done")

    assert "the revert restored version 1 and db's data" in run_demo(f"{DEMO} --fail", demo_dir)

    run_demo(DEMO, demo_dir)  # starts over: a release completed again
    again = read_state(demo_dir)
    run_session(AFTER_A_NEW_RELEASE, demo_dir)
    redeployed = read_state(demo_dir)
    assert (redeployed.phase, redeployed.phase_status) == ("verify", "done")
    assert (redeployed.base_sha, redeployed.merge_sha) == (again.base_sha, again.merge_sha)
    assert redeployed.backups != again.backups, "the backups were taken again"
    workspace = demo_dir / "prod/.asd/workspace/releases"
    assert len(list(workspace.glob("DEMO-1.env.*"))) == 1, "the completed record is kept"

    run_demo(f"{DEMO} --clean", demo_dir)
    assert not demo_dir.exists(), "--clean removes the demo's directory"
