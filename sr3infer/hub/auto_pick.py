"""Which bundled model a run without a model name uses, and the one line that says why (CLI and demo)."""

from __future__ import annotations

from collections.abc import Iterable

from . import manifest as manifests
from .manifest import any_size_model, default_models

__all__ = ["pick_model", "size_choices"]


def pick_model(sizes: Iterable[tuple[int, int]]) -> tuple[str, str] | None:
    """`(name, why)` for inputs of `sizes` (h, w): the model trained on their one square size, else the model for
    pictures of any size (auto_pick "any" in the manifest); None when neither fits."""
    sizes = set(sizes)
    manifest = manifests.load_manifest()  # read once per pick
    by_size = default_models(manifest)
    sides = {h for h, w in sizes if h == w and h in by_size}
    if len(sizes) == len(sides) == 1:
        side = sides.pop()
        name, domain = by_size[side]
        return name, f"{name} ({domain}), the bundled model trained on {side}x{side} inputs"
    fallback = any_size_model(manifest)
    if fallback is None or not sizes:
        return None
    name, domain = fallback
    others = f"; {size_choices(by_size)} go to their own model" if by_size else ""
    return name, f"{name} ({domain}), the bundled model for pictures of any size{others}"


def size_choices(by_size: dict[int, tuple[str, str]] | None = None) -> str:
    """The models picked by size (default: the manifest's), e.g. "16x16 (sr3-face-8x, faces)", for messages."""
    by_size = default_models() if by_size is None else by_size
    return ", ".join(f"{s}x{s} ({name}, {domain})" for s, (name, domain) in by_size.items())
