"""Arguments on their way out: accepted for one more minor version, with a `FutureWarning`."""

from __future__ import annotations

import warnings

__all__ = ["deprecate"]


def deprecate(name: str, removed_in: str, message: str, *, stacklevel: int = 3) -> None:
    """Warn that `name` goes in version `removed_in`; `message` says what to use instead (see CHANGELOG.md)."""
    warnings.warn(f"{name} is deprecated and will be removed in sr3infer {removed_in}. {message}",
                  FutureWarning, stacklevel=stacklevel)
