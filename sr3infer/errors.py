"""How the library words two common errors: unknown config keys, and an exception's first line."""

from __future__ import annotations

from typing import Iterable

__all__ = ["reject_unknown_keys", "first_line"]


def reject_unknown_keys(data: dict, known: Iterable[str], what: str) -> None:
    """Raise ValueError naming the keys of `data` outside `known` (`what`: "U-Net config", "schedule config", ...)."""
    known = set(known)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"Unknown {what} keys {unknown}; expected a subset of {sorted(known)}.")


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, or its type's name when the message is empty."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
