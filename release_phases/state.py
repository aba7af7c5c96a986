"""The release state file, `.asd/workspace/releases/<ticket>.env`.

It is what makes `--from=PHASE` and revert possible, so it is written atomically
(temp file, fsync, rename, fsync of the directory) and read back with distrust:
a file that does not parse, or that belongs to another ticket, is refused with a
message rather than half-used. Bash can `source` it: values are quoted where they
need to be and escaped for double quotes. Free-form values (keys other than the
engine's own, below) have the run's secrets masked.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from release_phases import PHASES, atomic
from release_phases.errors import ConfigError
from release_phases.masking import mask

#: Every phase a state file may name, in the order a release and a revert run them.
ALL_PHASES: tuple[str, ...] = (*PHASES, "revert", "return_to_main")
STATUSES = ("started", "done", "failed")
_KEY = re.compile(r"[A-Z][A-Z0-9_]*")
_SAFE = re.compile(r"[A-Za-z0-9._:/@+=,-]*")
_ALWAYS_QUOTED = {"SERVICES", "BACKUPS", "IMAGES"}
_IMAGE_ID = re.compile(r"sha256:[0-9a-f]{64}")
#: Keys whose values are ids the engine checks when it reads them back (a ticket, shas,
#: phases, service names, stamps): never masked, or a secret that happened to equal one
#: would make the file unreadable and the release impossible to resume or revert.
_ENGINE_KEYS = {
    "TICKET", "BASE_SHA", "MERGE_SHA", "BRANCH", "PHASE", "PHASE_STATUS",
    *_ALWAYS_QUOTED,
}  # fmt: skip


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
    #: Keys this version does not know, kept so a rewrite loses nothing.
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
        return "".join(f"{k}={_quote(k, _shown(k, v))}\n" for k, v in self.pairs())

    @classmethod
    def from_text(cls, text: str, source: str) -> State:
        values: dict[str, str] = {}
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            key, sep, raw = line.partition("=")
            if not sep or not _KEY.fullmatch(key):
                raise _bad(source, f"line {lineno} is not KEY=value: {line!r}")
            try:
                values[key] = _unquote(raw)
            except ValueError as exc:
                raise _bad(source, f"line {lineno}, {key}: {exc}") from None
        if not values.get("TICKET"):
            raise _bad(source, "TICKET is missing")
        status = values.get("PHASE_STATUS", "")
        if status and status not in STATUSES:
            raise _bad(source, f"PHASE_STATUS is {status!r}, not one of {', '.join(STATUSES)}")
        phase = values.get("PHASE", "")
        if phase and phase not in ALL_PHASES:
            raise _bad(source, f"PHASE is {phase!r}, not one of {', '.join(ALL_PHASES)}")
        backups: dict[str, str] = {}
        for pair in values.get("BACKUPS", "").split():
            service, sep, stamp = pair.partition("=")
            if not sep or not service or not stamp:
                raise _bad(source, f"BACKUPS entry {pair!r} is not service=stamp")
            backups[service] = stamp
        images: dict[str, str] = {}
        for pair in values.get("IMAGES", "").split():
            service, sep, image = pair.partition("=")
            if not sep or not service or not _IMAGE_ID.fullmatch(image):
                raise _bad(source, f"IMAGES entry {pair!r} is not service=sha256:<64 hex>")
            images[service] = image
        known = {k for k, _ in cls(ticket="x").pairs()}
        return cls(
            ticket=values["TICKET"],
            base_sha=values.get("BASE_SHA", ""),
            merge_sha=values.get("MERGE_SHA", ""),
            branch=values.get("BRANCH", "main"),
            phase=phase,
            phase_status=status,
            services=values.get("SERVICES", "").split(),
            backups=backups,
            images=images,
            timestamps={
                k.removeprefix("TIMESTAMP_"): v
                for k, v in values.items()
                if k.startswith("TIMESTAMP_")
            },
            extra={
                k: v for k, v in values.items() if k not in known and not k.startswith("TIMESTAMP_")
            },
        )


def image_key(service: str, compose_services: Sequence[str], name: str) -> str:
    """The IMAGES key of compose service `name` of `service`: the service itself when it
    has one compose service, else `service/name`."""
    return service if len(compose_services) == 1 else f"{service}/{name}"


def _bad(source: str, problem: str) -> ConfigError:
    return ConfigError(
        f"state file {source} is unreadable: {problem}",
        next_command=f"inspect {source}; if it is damaged, move it aside and release again",
    )


def _shown(key: str, value: str) -> str:
    if key in _ENGINE_KEYS or key.startswith("TIMESTAMP_"):
        return value
    return mask(value)


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
        text = path.read_text()
    except FileNotFoundError:
        raise not_found(path, ticket) from None
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
