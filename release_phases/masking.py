"""Secrets known for the run, and `mask`, which hides them in whatever is shown or kept.

What counts as a secret: the value of an environment variable whose name contains
TOKEN, PASSWORD, SECRET or KEY (any case), from this process's environment, a
compose service's `environment:` and the project's `.env`; and every value of a
compose service's `env_file:`s, whatever its name, since those files exist to keep
values out of the repository.

The values are collected once per run (`ReleaseContext`, and again after the pull)
into `KNOWN`. The places where text leaves the engine call `mask`: the runner's
echo, error messages, the event log, the state file, the HTML report. Commands
themselves keep the real values: only what is shown or stored is masked.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

MASK = "***"
_SECRET_NAME = re.compile(r"TOKEN|PASSWORD|SECRET|KEY", re.IGNORECASE)
#: Values shorter than this (blanks around them not counted) are not masked: a
#: secret of 1 to 3 characters (`1`, `yes`, `db`) would also hide every digit, flag
#: and word that happens to match it, and protects little that is worth the
#: unreadable log. A value of blanks would hide the indentation of every output.
MIN_LENGTH = 4


def looks_secret(name: str) -> bool:
    """Does a variable called `name` hold a secret, by its name?"""
    return _SECRET_NAME.search(name) is not None


class Secrets:
    """A set of secret values and the masking of them; `KNOWN` is the run's."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.add(values)

    def add(self, values: Iterable[str]) -> None:
        new = {v for v in values if len(v.strip()) >= MIN_LENGTH} - self._values
        if not new:
            return
        self._values |= new
        # Longest first: of two secrets where one contains the other, the whole is hidden.
        ordered = sorted(self._values, key=lambda v: (-len(v), v))
        self._pattern = re.compile("|".join(map(re.escape, ordered)))

    def clear(self) -> None:
        self._values.clear()
        self._pattern = None

    def __len__(self) -> int:
        return len(self._values)

    def mask(self, text: str) -> str:
        """`text` with every known secret in it replaced by `***`."""
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(MASK, text)

    def stream(self) -> MaskedStream:
        """A masker for text that arrives in pieces (a command's output, echoed live)."""
        return MaskedStream(self)

    def _safe_cut(self, text: str) -> int:
        """How much of `text` can be masked and let go now: everything but a tail that
        may be the start of a secret still being printed."""
        if self._pattern is None:
            return len(text)
        longest = max(map(len, self._values))
        cut = len(text)
        for start in range(max(0, len(text) - longest + 1), len(text)):
            tail = text[start:]
            if any(len(v) > len(tail) and v.startswith(tail) for v in self._values):
                cut = start
                break
        # A whole secret that the cut would split is kept back with the tail.
        for match in self._pattern.finditer(text):
            if match.start() < cut < match.end():
                return match.start()
        return cut


class MaskedStream:
    """Masks text given piece by piece; a piece that may end in part of a secret is held
    back until the next one shows whether it is (`flush` lets the rest go)."""

    def __init__(self, secrets: Secrets) -> None:
        self.secrets = secrets
        self.pending = ""

    def feed(self, text: str) -> str:
        whole = self.pending + text
        cut = self.secrets._safe_cut(whole)
        self.pending = whole[cut:]
        return self.secrets.mask(whole[:cut])

    def flush(self) -> str:
        rest, self.pending = self.pending, ""
        return self.secrets.mask(rest)


#: The secrets known for this run (one run per process).
KNOWN = Secrets()


def mask(text: str) -> str:
    """`text` with this run's known secrets replaced by `***`."""
    return KNOWN.mask(text)


# -- where secrets are found ----------------------------------------------------------------


def from_environ(environ: Mapping[str, str]) -> set[str]:
    """The values of the variables whose names look secret."""
    return {value for name, value in environ.items() if looks_secret(name)}


def parse_env_file(text: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """`NAME=value` lines as Compose reads an env file: `#` comments, `export `
    prefixes, single quotes literal, double quotes and bare values interpolated
    from `environ`, a bare value's ` #` comment dropped. `NAME` alone is skipped (its
    value is the environment's, collected by its name)."""
    env = environ or {}
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").lstrip()
        name, sep, value = line.partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        elif len(value) >= 2 and value[0] == value[-1] == '"':
            value = interpolate(value[1:-1], env)
        else:
            value = interpolate(re.split(r"\s#", value, maxsplit=1)[0].rstrip(), env)
        values[name.strip()] = value
    return values


_VARIABLE = re.compile(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}|([A-Za-z_]\w*))")


def interpolate(value: str, environ: Mapping[str, str]) -> str:
    """`$NAME`, `${NAME}`, `${NAME:-default}` and `$$` as Compose resolves them (enough
    to know the value a container gets; the `:?` error forms are read as plain)."""

    def resolve(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(3)
        found = environ.get(name)
        return found if found else (match.group(2) or "")

    return _VARIABLE.sub(resolve, value)


def from_compose(compose_file: Path, environ: Mapping[str, str] | None = None) -> set[str]:
    """Secrets a compose file gives its services: `environment:` entries with secret
    names, every value of their `env_file:`s, and secret-named values of the project's
    `.env`. A file that cannot be read gives none (the release reports it elsewhere)."""
    base = compose_file.parent
    env = dict(os.environ if environ is None else environ)
    dotenv = _read_env_file(base / ".env", env)
    # Compose's own order: the shell's variables win over the project's .env.
    env = {**dotenv, **env}
    found = {v for k, v in dotenv.items() if looks_secret(k)}
    import yaml  # here: errors.py imports this module, and plain pytest runs import that

    try:
        data = yaml.safe_load(compose_file.read_text())
    except (OSError, yaml.YAMLError, RecursionError):
        return found
    services = data.get("services") if isinstance(data, dict) else None
    if not isinstance(services, dict):
        return found
    for service in services.values():
        if not isinstance(service, dict):
            continue
        for name, value in _environment(service.get("environment")):
            if looks_secret(name):
                found.add(interpolate(value, env))
        for path in _env_files(service.get("env_file")):
            found |= set(_read_env_file(base / path, env).values())
    return found


def _environment(section: Any) -> list[tuple[str, str]]:
    """`environment:` as a mapping or as a list of `NAME=value` (`NAME` alone: skipped)."""
    if isinstance(section, dict):
        return [(str(k), str(v)) for k, v in section.items() if v is not None]
    if isinstance(section, list):
        pairs = [str(item).partition("=") for item in section]
        return [(name, value) for name, sep, value in pairs if sep]
    return []


def _env_files(section: Any) -> list[str]:
    """`env_file:` as one path, a list of paths, or a list of `{path: ..., required: ...}`."""
    items = section if isinstance(section, list) else [section]
    paths = []
    for item in items:
        path = item.get("path") if isinstance(item, dict) else item
        if isinstance(path, str) and path:
            paths.append(path)
    return paths


def _read_env_file(path: Path, environ: Mapping[str, str]) -> dict[str, str]:
    try:
        return parse_env_file(path.read_text(errors="replace"), environ)
    except OSError:  # missing (`required: false`) or unreadable: Compose itself says so
        return {}
