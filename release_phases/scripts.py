"""Service hooks and per-ticket scripts: found in the deploy repo, run one way.

A hook is `packages/<service>/<hook>.{sh,ts,py}`; a ticket script is
`releases/<ticket>-<anything>.{sh,ts,py}`. Both run through `run_script`: bash for
`.sh`, this Python for `.py`, and bun (the seed convention) or else deno for `.ts`,
in the deploy repo, with the release described by the environment (`script_env`).

Finding an interpreter is the only lookup here; `preflight` does it for every script
of a phase before the phase starts, so a missing runtime stops the release before
anything ran rather than halfway through.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from release_phases.errors import ConfigError, ReleaseError
from release_phases.host import Host
from release_phases.host.compose import OVERRIDE_ENV
from release_phases.host.shell import Result, render

HOOKS = ("pre_start_init", "post_start_init", "ensure-config")

#: File extension -> script kind, in the order files are looked for.
KINDS = {".sh": "sh", ".ts": "ts", ".py": "py"}

INSTALL_TS = "install bun, or deno (pip install deno)"


@dataclass(frozen=True)
class Script:
    path: Path
    kind: str
    #: Where it lives in the deploy repo, for logs: `releases/12-fix.sh`.
    name: str


def _script(path: Path, name: str) -> Script:
    """A script file of the deploy repo; one that is a link out of its directory is
    refused, since what it runs would not be what the repo reviewed and merged."""
    within = path.parent.resolve()
    target = path.resolve()
    if not target.is_relative_to(within):
        raise ConfigError(
            f"{name} is a link to {target}, outside {within}: a hook or ticket script must "
            "be a file of the deploy repo",
            next_command="replace the link with the file itself, commit and merge, then "
            "rerun the release",
        )
    return Script(path=path, kind=KINDS[path.suffix], name=name)


def find_hook(package_dir: Path, name: str) -> Script | None:
    """The service's `name` hook, or None; two files for one hook is a ConfigError."""
    if name not in HOOKS:
        raise ValueError(f"unknown hook {name!r}; hooks are {', '.join(HOOKS)}")
    where = f"{package_dir.parent.name}/{package_dir.name}"
    found = [
        _script(package_dir / f"{name}{ext}", f"{where}/{name}{ext}")
        for ext in KINDS
        if (package_dir / f"{name}{ext}").is_file()
    ]
    if len(found) > 1:
        names = " and ".join(s.name for s in found)
        raise ConfigError(
            f"{where} has {len(found)} {name} hooks: {names}; a hook must be one file",
            next_command="delete all but one of them in the deploy repo, commit, "
            "then rerun the release",
        )
    return found[0] if found else None


def is_ticket_script(name: str, ticket: str) -> bool:
    """Is file ``name`` in releases/ one of ``ticket``'s scripts? (`12` does not own `123-x.sh`)"""
    return name.startswith(f"{ticket}-") and Path(name).suffix in KINDS


def find_ticket_scripts(repo: Path, ticket: str) -> list[Script]:
    """`releases/<ticket>-*.{sh,ts,py}` in name order (`12` does not match `123-x.sh`)."""
    if not ticket or "/" in ticket or ticket.startswith("."):
        raise ConfigError(f"invalid ticket {ticket!r}: it names files in releases/")
    releases = repo / "releases"
    if not releases.is_dir():
        return []
    paths = sorted(
        p for p in releases.iterdir() if is_ticket_script(p.name, ticket) and p.is_file()
    )
    return [_script(p, f"releases/{p.name}") for p in paths]


# -- runtimes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Lookup:
    """Where interpreters are looked for.

    ``path`` is searched like PATH (None: this process's PATH); ``deno_package``
    also finds the binary that the `deno` package installed for this Python, which
    is preferred to a `deno` on PATH because that may be a wrapper (a pyenv shim).
    """

    path: str | None = None
    deno_package: bool = True

    def which(self, program: str) -> str | None:
        return shutil.which(program, path=self.path)

    def packaged_deno(self) -> str | None:
        if not self.deno_package:
            return None
        try:
            from deno import find_deno_bin
        except ImportError:
            return None
        try:
            return os.fsdecode(find_deno_bin())
        except FileNotFoundError:  # the module is there, its binary is not
            return None


DEFAULT_LOOKUP = Lookup()


def resolve_runtime(kind: str, *, lookup: Lookup = DEFAULT_LOOKUP) -> list[str]:
    """The argv prefix that runs a script of ``kind``; ReleaseError if none is installed."""
    if kind == "py":
        if not sys.executable:
            raise ReleaseError(
                "cannot run .py scripts: this Python does not know its own executable",
                next_command="run the release with a python3 found on PATH",
            )
        return [sys.executable, "-u"]  # -u: output streams as it is printed
    if kind == "sh":
        bash = lookup.which("bash")
        if bash is None:
            raise ReleaseError(
                "cannot run .sh scripts: bash is not installed",
                next_command="install bash, then rerun the release",
            )
        return [bash]
    if kind == "ts":
        bun = lookup.which("bun")
        if bun is not None:
            return [bun, "run"]
        deno = lookup.packaged_deno() or lookup.which("deno")
        if deno is not None:
            return [deno, "run", "-A"]
        raise ReleaseError(
            "cannot run .ts scripts: neither bun nor deno is installed "
            "(looked on PATH and for this Python's deno package)",
            next_command=f"{INSTALL_TS}, then rerun the release",
        )
    raise ValueError(f"unknown script kind {kind!r}; kinds are {', '.join(KINDS.values())}")


def preflight(scripts: Iterable[Script], *, lookup: Lookup = DEFAULT_LOOKUP) -> None:
    """Check that every script can be run; one ReleaseError naming all that cannot."""
    by_kind: dict[str, list[str]] = {}
    for script in scripts:
        by_kind.setdefault(script.kind, []).append(script.name)
    problems = []
    next_commands = []
    for kind, names in by_kind.items():
        try:
            resolve_runtime(kind, lookup=lookup)
        except ReleaseError as exc:
            problems.append(f"{', '.join(names)}: {exc.what}")
            next_commands.append(exc.next_command)
    if problems:
        raise ReleaseError(
            "scripts of this release cannot run:\n" + "\n".join(problems),
            untouched="everything: no script was run",
            next_command="; ".join(next_commands),
        )


def argv(script: Script, runtimes: Mapping[str, Sequence[str]]) -> list[str]:
    """The command that runs ``script``, given the argv prefix for each kind."""
    if script.kind not in runtimes:
        raise ValueError(f"no runtime given for .{script.kind} ({script.name})")
    return [*runtimes[script.kind], str(script.path)]


# -- running ----------------------------------------------------------------------------


def script_env(
    *,
    ticket: str,
    base_sha: str,
    merge_sha: str,
    services: Sequence[str],
    container_prefix: str,
    repo_root: Path,
    service: str | None = None,
    compose: str | None = None,
) -> dict[str, str]:
    """The release as a script sees it.

    SERVICES is space-separated (`for s in $SERVICES`). SERVICE names the hook's
    service and is empty for ticket scripts, so a value exported in the operator's
    shell never leaks in. ``compose``, the Compose the engine drives (shell-quoted),
    is given as RELEASE_PHASES_COMPOSE: a script that runs
    ``${RELEASE_PHASES_COMPOSE:-docker compose}`` drives the same one, also on a
    host where the engine found it elsewhere than `docker compose`.
    """
    env = {
        "TICKET": ticket,
        "BASE_SHA": base_sha,
        "MERGE_SHA": merge_sha,
        "SERVICES": " ".join(services),
        "SERVICE": service or "",
        "CONTAINER_PREFIX": container_prefix,
        "REPO_ROOT": str(repo_root),
    }
    if compose:
        env[OVERRIDE_ENV] = compose
    return env


class ScriptFailed(ReleaseError):
    """A hook or ticket script exited non-zero or ran out of time."""

    def __init__(self, script: Script, result: Result, *, timeout: float, by_hand: str) -> None:
        self.script = script
        self.result = result
        self.timed_out = result.timed_out
        self.tail = result.tail()
        how = (
            f"timed out after {timeout:g}s and was killed, every process of its group with it"
            if result.timed_out
            else f"exited {result.returncode}"
        )
        super().__init__(
            f"{script.name} {how}; its last output:\n{self.tail or '(no output)'}",
            next_command=f"fix {script.name}, or run it by hand to see why: {by_hand}",
            # A signal -N is reported as a shell would: 128+N.
            rc=result.returncode if result.returncode > 0 else 128 - result.returncode,
        )


def run_script(
    script: Script,
    *,
    host: Host,
    env: Mapping[str, str],
    cwd: Path,
    timeout: float,
    lookup: Lookup = DEFAULT_LOOKUP,
) -> Result:
    """Run ``script`` in ``cwd`` (the deploy repo), its output streamed and kept."""
    command = argv(script, {script.kind: resolve_runtime(script.kind, lookup=lookup)})
    result = host.run(command, cwd=cwd, env=env, timeout=timeout, stream=True, check=False)
    if not result.ok:
        assignments = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        by_hand = f"cd {shlex.quote(str(cwd))} && {assignments} {render(command)}"
        raise ScriptFailed(script, result, timeout=timeout, by_hand=by_hand)
    return result
