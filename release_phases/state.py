"""The release state file, `.asd/workspace/releases/<ticket>.env`.

It is what makes `--from=PHASE` and revert possible, so it is written atomically
(temp file, fsync, rename, fsync of the directory) and read back with distrust:
a file that does not parse, that holds a key this version does not know (with the
nearest known one suggested), misses one the writer always writes, ends mid-line,
holds a value the writer would not write, or belongs to another ticket, is refused
with a message rather than half-used. Bash can `source` it: values are quoted where they
need to be and escaped for double quotes. Secrets are not masked here: every value
is an id the reader checks (a sha, a branch, service names...), so a masked one
would make the file unreadable and the release impossible to resume or revert.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from release_phases import PHASES, atomic
from release_phases.errors import ConfigError
from release_phases.options import SERVICE_RE, TICKET_RE, validate_branch

#: Every phase a state file may name, in the order a release and a revert run them.
ALL_PHASES: tuple[str, ...] = (*PHASES, "revert", "return_to_main")
STATUSES = ("started", "done", "failed")
_KEY = re.compile(r"[A-Z][A-Z0-9_]*")
_SAFE = re.compile(r"[A-Za-z0-9._:/@+=,-]*")
_ALWAYS_QUOTED = {"SERVICES", "BACKUPS", "IMAGES"}
_IMAGE_ID = re.compile(r"sha256:[0-9a-f]{64}")
#: A full commit id: SHA-1, or SHA-256 in a repository that uses it.
_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_STAMP = re.compile(r"\d{8}_\d{6}")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")

#: What every file holds, in this order, even when empty.
WRITTEN_KEYS = (
    "TICKET",
    "BASE_SHA",
    "MERGE_SHA",
    "BRANCH",
    "PHASE",
    "PHASE_STATUS",
    "SERVICES",
    "BACKUPS",
    "IMAGES",
)
#: Facts a step records (`step.record(KEY=...)`) beyond State's own fields, kept in
#: `State.extra`. A new one is added here, or the reader refuses the file it is in.
RECORDED_KEYS = ("PULL_FROM", "REVERT_SHA", "HOTFIX_BRANCH", "HOTFIX_SHA", "DRIFT")
_SHA_KEYS = ("BASE_SHA", "MERGE_SHA", "PULL_FROM", "REVERT_SHA", "HOTFIX_SHA")
#: Every key a state file may hold; any other is a typo or a foreign file.
KNOWN_KEYS = frozenset(
    {
        *WRITTEN_KEYS,
        *RECORDED_KEYS,
        *(f"TIMESTAMP_{p.upper()}_{o}" for p in ALL_PHASES for o in ("START", "DONE", "FAILED")),
    }
)


@dataclass
class State:
    ticket: str
    base_sha: str = ""
    merge_sha: str = ""
    branch: str = "main"
    phase: str = ""
    phase_status: str = ""
    services: list[str] = field(default_factory=list)
    backups: dict[str, str] = field(default_factory=dict)
    #: service (or service/compose-service) -> the image id it ran before the release.
    images: dict[str, str] = field(default_factory=dict)
    #: `PREPARE_START` -> `2026-05-18T15:29:00Z`, kept in the order written.
    timestamps: dict[str, str] = field(default_factory=dict)
    #: The facts of RECORDED_KEYS that steps recorded (REVERT_SHA, ...).
    extra: dict[str, str] = field(default_factory=dict)

    # -- phases -------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        """A release that completed, or was reverted: a new release may start afresh."""
        return self.phase_status == "done" and self.phase in ("verify", "revert")

    def done(self, phase: str) -> bool:
        return f"{phase.upper()}_DONE" in self.timestamps

    def begin(self, phase: str, at: str) -> None:
        """Start `phase`: forget its earlier outcome and that of every later phase."""
        later = ALL_PHASES[ALL_PHASES.index(phase) :]
        for name in later:
            for suffix in ("START", "DONE", "FAILED"):
                self.timestamps.pop(f"{name.upper()}_{suffix}", None)
        self.phase, self.phase_status = phase, "started"
        self.timestamps[f"{phase.upper()}_START"] = at

    def finish(self, phase: str, ok: bool, at: str) -> None:
        self.phase, self.phase_status = phase, "done" if ok else "failed"
        self.timestamps[f"{phase.upper()}_{'DONE' if ok else 'FAILED'}"] = at

    # -- text ---------------------------------------------------------------------------
    def pairs(self) -> list[tuple[str, str]]:
        out = [
            ("TICKET", self.ticket),
            ("BASE_SHA", self.base_sha),
            ("MERGE_SHA", self.merge_sha),
            ("BRANCH", self.branch),
            ("PHASE", self.phase),
            ("PHASE_STATUS", self.phase_status),
            ("SERVICES", " ".join(self.services)),
            ("BACKUPS", " ".join(f"{s}={t}" for s, t in self.backups.items())),
            ("IMAGES", " ".join(f"{s}={i}" for s, i in self.images.items())),
        ]
        out += [(f"TIMESTAMP_{k}", v) for k, v in self.timestamps.items()]
        out += list(self.extra.items())
        return out

    def to_text(self) -> str:
        return "".join(f"{k}={_quote(k, v)}\n" for k, v in self.pairs())

    @classmethod
    def from_text(cls, text: str, source: str) -> State:
        """Parse and check a whole file; any doubt about it is a refusal, never a guess."""
        values = _pairs(text, source)
        missing = [k for k in WRITTEN_KEYS if k not in values]
        if missing:
            # The writer puts every one of these in every file: one missing means the
            # file was cut short or edited, and what follows it cannot be trusted.
            raise _bad(
                source,
                f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'}"
                " missing (truncated or edited by hand?)",
            )
        for key, value in values.items():
            problem = _value_problem(key, value)
            if problem:
                raise _bad(source, f"{key} {problem}")
        phase, status = values["PHASE"], values["PHASE_STATUS"]
        if status:
            outcome = {"started": "START", "done": "DONE", "failed": "FAILED"}[status]
            if f"TIMESTAMP_{phase.upper()}_{outcome}" not in values:
                raise _bad(
                    source,
                    f"PHASE={phase} PHASE_STATUS={status} but TIMESTAMP_{phase.upper()}_"
                    f"{outcome} is missing (truncated or edited by hand?)",
                )
        return cls(
            ticket=values["TICKET"],
            base_sha=values["BASE_SHA"],
            merge_sha=values["MERGE_SHA"],
            branch=values["BRANCH"],
            phase=phase,
            phase_status=status,
            services=values["SERVICES"].split(),
            backups=dict(pair.split("=", 1) for pair in values["BACKUPS"].split()),
            images=dict(pair.split("=", 1) for pair in values["IMAGES"].split()),
            timestamps={
                k.removeprefix("TIMESTAMP_"): v
                for k, v in values.items()
                if k.startswith("TIMESTAMP_")
            },
            extra={k: v for k, v in values.items() if k in RECORDED_KEYS},
        )


def _pairs(text: str, source: str) -> dict[str, str]:
    """`KEY=value` lines, unquoted; a line that is not one, or a key that is not a key
    of this file, or one given twice, is refused with its line number."""
    if text and not text.endswith("\n"):
        # Every line the writer writes ends in a newline: without one the last line may
        # have been cut anywhere, and a cut value can still look valid (`BRANCH=ma`).
        raise _bad(
            source,
            f"its last line {text.rsplit(chr(10), 1)[-1]!r} has no newline: the file is truncated",
        )
    values: dict[str, str] = {}
    where: dict[str, int] = {}
    # Split on newlines only, as bash does (splitlines() would also split on \r, \f...).
    for lineno, line in enumerate(text.split("\n")[:-1], 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, raw = line.partition("=")
        if not sep or not _KEY.fullmatch(key):
            raise _bad(source, f"line {lineno} is not KEY=value: {line!r}")
        if key not in KNOWN_KEYS:
            raise _bad(source, f"line {lineno}: {key} is not a key of a state file{_suggest(key)}")
        if key in values:
            raise _bad(source, f"line {lineno}: {key} is set twice (first on line {where[key]})")
        try:
            values[key] = _unquote(raw)
        except ValueError as exc:
            raise _bad(source, f"line {lineno}, {key}: {exc}") from None
        where[key] = lineno
    return values


def _suggest(key: str) -> str:
    close = difflib.get_close_matches(key, sorted(KNOWN_KEYS), n=1)
    return f"; did you mean {close[0]}?" if close else ""


def _value_problem(key: str, value: str) -> str | None:
    """What is wrong with one value, or None: each key's values are the writer's own."""
    if key == "TICKET":
        ok = bool(TICKET_RE.fullmatch(value)) and not value.startswith((".", "-"))
        return None if ok else f"is {value!r}, not a ticket id"
    if key in _SHA_KEYS:
        return None if not value or _SHA.fullmatch(value) else f"is {value!r}, not a commit sha"
    if key in ("BRANCH", "HOTFIX_BRANCH"):
        try:
            validate_branch(value)
        except ConfigError:
            return f"is {value!r}, not a branch name"
        return None
    if key == "PHASE":
        return (
            None
            if not value or value in ALL_PHASES
            else (f"is {value!r}, not one of {', '.join(ALL_PHASES)}")
        )
    if key == "PHASE_STATUS":
        return (
            None
            if not value or value in STATUSES
            else (f"is {value!r}, not one of {', '.join(STATUSES)}")
        )
    if key in ("SERVICES", "DRIFT"):
        bad = [name for name in value.split() if not SERVICE_RE.fullmatch(name)]
        return f"entry {bad[0]!r} is not a service name" if bad else None
    if key == "BACKUPS":
        for pair in value.split():
            service, sep, stamp = pair.partition("=")
            if not sep or not SERVICE_RE.fullmatch(service) or not _STAMP.fullmatch(stamp):
                return f"entry {pair!r} is not service=YYYYmmdd_HHMMSS"
        return None
    if key == "IMAGES":
        for pair in value.split():
            service, sep, image = pair.partition("=")
            names = service.split("/")
            if (
                not sep
                or len(names) > 2
                or not all(SERVICE_RE.fullmatch(n) for n in names)
                or not _IMAGE_ID.fullmatch(image)
            ):
                return f"entry {pair!r} is not service=sha256:<64 hex>"
        return None
    if key.startswith("TIMESTAMP_"):
        return None if _TIME.fullmatch(value) else f"is {value!r}, not YYYY-mm-ddTHH:MM:SSZ"
    return None


def image_key(service: str, compose_services: Sequence[str], name: str) -> str:
    """The IMAGES key of compose service `name` of `service`: the service itself when it
    has one compose service, else `service/name`."""
    return service if len(compose_services) == 1 else f"{service}/{name}"


def _bad(source: str, problem: str) -> ConfigError:
    return ConfigError(
        f"state file {source} is unreadable: {problem}",
        next_command=f"inspect {source}; if it is damaged, move it aside and release again",
    )


def _quote(key: str, value: str) -> str:
    if key not in _ALWAYS_QUOTED and _SAFE.fullmatch(value):
        return value
    escaped = re.sub(r'(["\\$`])', r"\\\1", value)
    return f'"{escaped}"'


def _unquote(raw: str) -> str:
    if not raw.startswith('"'):
        if not _SAFE.fullmatch(raw):
            raise ValueError(f"unquoted value {raw!r} has characters that need quotes")
        return raw
    if len(raw) < 2 or not raw.endswith('"'):
        raise ValueError(f"unterminated quotes in {raw!r}")
    body = raw[1:-1]
    out, i = [], 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body) and body[i + 1] in '"\\$`':
            out.append(body[i + 1])
            i += 2
            continue
        if ch == '"':
            raise ValueError(f"stray quote in {raw!r}")
        out.append(ch)
        i += 1
    return "".join(out)


def path_for(workspace: Path, ticket: str) -> Path:
    return workspace / "releases" / f"{ticket}.env"


def not_found(path: Path, ticket: str) -> ConfigError:
    """The refusal of a run that needs a state file when there is none."""
    return ConfigError(
        f"no state file {path}: ticket {ticket} has not been prepared on this host",
        next_command=f"pytest -m release --ticket {ticket}   (a full release, from prepare)",
    )


def load(path: Path, ticket: str) -> State:
    """Read the state for `ticket`; refuse a missing file or another ticket's state."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise not_found(path, ticket) from None
    except OSError as exc:
        raise _bad(str(path), exc.strerror or str(exc)) from None
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        # The writer writes UTF-8; anything else is damage, not a file to guess at.
        raise _bad(str(path), f"byte {exc.start} is not UTF-8") from None
    state = State.from_text(text, str(path))
    if state.ticket != ticket:
        raise ConfigError(
            f"state file {path} belongs to ticket {state.ticket}, not {ticket}",
            next_command=f"check the ticket id; the file's own is --ticket {state.ticket}",
        )
    return state


def write(path: Path, state: State) -> None:
    """Replace the file atomically: readers see the old state or the new, never half."""
    atomic.write(path, [state.to_text().encode()])
