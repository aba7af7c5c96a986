"""The strict shape of the documents the engine reads (a manifest, a backup record),
and the one place where pydantic's ValidationError becomes the operator's words.

A document model says which keys exist and what each holds; pydantic checks it.
Two choices make that strict enough for files a release trusts with its data:

- ``extra="forbid"``: a key the model does not know is an error. A typo such as
  ``pahts:`` would otherwise be ignored, and the backup it meant silently not taken.
- ``strict=True``: no coercion. YAML's ``true`` is not the number 1, ``"5"`` is not
  5, and a float tag (``1.10`` read as 1.1) is not quietly turned into text.

What pydantic does not give is said here: its messages name neither the nearest
known key nor the value in the project's style, so `problems` writes them.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError

#: Text that must hold something: a name, an argv element, a path.
NonEmptyStr = Annotated[str, StringConstraints(min_length=1)]


class Strict(BaseModel):
    """A mapping of a document: unknown keys refused, values taken as they are."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# pydantic's error types for a value of the wrong type, with the type the key wants.
_WANTED = {
    "string_type": "str",
    "int_type": "int",
    "bool_type": "bool",
    "float_type": "a number",
    "list_type": "list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
}

#: At most this many problems are listed in one message; the rest are counted.
MAX_PROBLEMS = 5


def dotted(loc: Sequence[int | str]) -> str:
    """pydantic's ``loc`` as the operator reads it: ``backup.dump.command[0]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def problems(exc: ValidationError, model: type[BaseModel]) -> list[tuple[str, str]]:
    """(dotted key, what is wrong with it) for each error; the key is "" for the
    document itself (it is not a mapping).

    An unknown key comes first, since it often explains the rest: `comand:` is also
    why `command` is missing, and that second error, which says the same mistake
    again, is left out.
    """
    described = [(err["type"], *_describe(dict(err), model)) for err in exc.errors()]
    unknown = [(key, problem) for kind, key, problem in described if kind == "extra_forbidden"]
    suggested = {problem.rpartition("did you mean ")[2].rstrip("?") for _, problem in unknown}
    rest = [
        (key, problem)
        for kind, key, problem in described
        if kind != "extra_forbidden" and not (kind == "missing" and key in suggested)
    ]
    return unknown + rest


def summary(found: list[tuple[str, str]]) -> str:
    """`key problem; key problem`, at most MAX_PROBLEMS of them; the document itself
    (key "") is "the top level"."""
    shown = [f"{key or 'the top level'} {problem}" for key, problem in found[:MAX_PROBLEMS]]
    more = len(found) - MAX_PROBLEMS
    if more > 0:
        shown.append(f"and {more} more")
    return "; ".join(shown)


def _describe(err: dict[str, Any], model: type[BaseModel]) -> tuple[str, str]:
    loc: tuple[int | str, ...] = tuple(err["loc"])
    kind: str = err["type"]
    value = err.get("input")
    if kind == "extra_forbidden":
        parent, name = loc[:-1], str(loc[-1])
        known = keys_at(model, parent)
        close = difflib.get_close_matches(name, known, n=1)
        hint = (
            f"did you mean {dotted((*parent, close[0]))}?"
            if close
            else f"the keys here are {', '.join(known)}"
        )
        return dotted(loc), f"is not a known key; {hint}"
    if kind == "invalid_key":
        # A YAML key that is not text (`1: x`, `null: x`); the loc ends with the key.
        where = dotted(loc[:-1])
        return where, f"has a key {_show(value)} that is not a string"
    key = dotted(loc)
    if kind == "missing":
        return key, "is required"
    if kind in _WANTED:
        return key, f"must be {_WANTED[kind]}, got {type(value).__name__} {_show(value)}"
    if kind in ("string_too_short", "too_short"):
        return key, "must not be empty"
    if kind == "literal_error":
        expected = str((err.get("ctx") or {}).get("expected", "")).replace("'", "")
        return key, f"must be one of {expected}, got {_show(value)}"
    if kind == "finite_number":
        return key, f"must be a finite number, got {_show(value)}"
    # Our own checks raise PydanticCustomError with the project's wording; any other
    # pydantic check speaks in its own words, still naming the key.
    return key, str(err["msg"])


def _show(value: Any) -> str:
    """A value as the message shows it: its repr, cut short (a fuzzed file can be huge)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def keys_at(model: type[BaseModel], loc: Sequence[int | str]) -> list[str]:
    """The keys a document allows at ``loc`` (a mapping inside it), in declared order;
    [] when ``loc`` leads to no model."""
    node: Any = model
    for part in loc:
        node = _inner(node, part)
        if node is None:
            return []
    if isinstance(node, type) and issubclass(node, BaseModel):
        return list(node.model_fields)
    return []


def _inner(node: Any, part: int | str) -> Any:
    """The type found at ``part`` of ``node``: a model's field, a list's item, either
    side of an Optional."""
    if isinstance(node, type) and issubclass(node, BaseModel):
        field = node.model_fields.get(part) if isinstance(part, str) else None
        return None if field is None else _unwrap(field.annotation)
    if isinstance(part, int) and typing.get_origin(node) in (list, tuple):
        return _unwrap(typing.get_args(node)[0])
    return None


def _unwrap(annotation: Any) -> Any:
    """`X | None` is X, `Annotated[X, ...]` is X: what a key's value is a mapping of."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        kinds = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _unwrap(kinds[0]) if len(kinds) == 1 else None
    return annotation
