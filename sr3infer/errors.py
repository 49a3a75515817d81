"""How the library words common errors: unknown config keys, an exception's first line, bad JSON."""

from __future__ import annotations

import json
import sys
from dataclasses import MISSING, fields
from typing import Any, Iterable, TypeVar

__all__ = ["reject_unknown_keys", "first_line", "parse_json", "UsageError", "Cancelled"]


def reject_unknown_keys(data: dict, known: Iterable[str], what: str) -> None:
    """Raise ValueError naming the keys of `data` outside `known` (`what`: "U-Net config", ...)."""
    known = set(known)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"Unknown {what} keys {unknown}; expected a subset of {sorted(known)}.")


T = TypeVar("T")


def dataclass_from_dict(cls: type[T], data: dict, what: str) -> T:
    """`cls(**data)` for a dataclass, refusing unknown keys and naming missing ones."""
    reject_unknown_keys(data, (f.name for f in fields(cls)), what)  # type: ignore[arg-type]
    missing = sorted(f.name for f in fields(cls) if f.name not in data  # type: ignore[arg-type]
                     and f.default is MISSING and f.default_factory is MISSING)
    if missing:
        raise ValueError(f"{what[:1].upper()}{what[1:]} is missing required key(s) {missing}.")
    return cls(**data)


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, or its type's name when the message is empty."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def parse_json(text: str | bytes, what: str, after: str = "") -> Any:
    """`json.loads(text)`, with a ValueError naming `what` for bad or too deeply nested JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{what} is not valid JSON ({err}){after}.") from None
    except RecursionError:
        raise ValueError(f"{what} is nested too deeply to read (over Python's limit of about {sys.getrecursionlimit()} "
                         f"levels of arrays or objects){after}; expected a small JSON object a few levels deep. "
                         "Is it the right file?") from None


class UsageError(Exception):
    """A mistake in the command line itself (exit code 2)."""


class Cancelled(Exception):
    """A run stopped by its step callback (False, or raising this); nothing of it is written."""
