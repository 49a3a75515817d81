"""The one seed rule: sample j of image k in stage (or pass) s uses `seed + s*STRIDE + k*K + j`.

Seeds are additive, so batching, ranks and actors do not change results.
"""

from __future__ import annotations

import numbers
from typing import Any, cast

import torch

__all__ = ["MAX_SEED", "STAGE_STRIDE", "check_seed", "sample_seed", "check_room", "generators"]

MAX_SEED = 2**64 - 1
"""The largest seed `torch.Generator.manual_seed` takes; every derived seed must stay at or below it."""

STAGE_STRIDE = 1_000_000
"""Stage s of a cascade, or pass s of an output larger than the model's scale, adds s * STAGE_STRIDE."""


def check_seed(seed: Any, name: str = "seed") -> int | None:
    """`seed` as an int from 0 to MAX_SEED, or None (ValueError naming `name`)."""
    if seed is None:
        return None
    # cast: typeshed's numbers.Integral declares no comparison with int; at runtime it compares as one
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= cast(int, seed) <= MAX_SEED:
        raise ValueError(f"{name} must be an integer from 0 to 2**64 - 1, got {seed!r}.")
    return int(seed)


def sample_seed(seed: int, image: int, *, sample: int = 0, num_samples: int = 1, stage: int = 0) -> int:
    """The seed of sample `sample` (of `num_samples`) of image `image` in stage or pass `stage`."""
    return seed + stage * STAGE_STRIDE + image * num_samples + sample


def check_room(seed: int | None, images: int, *, num_samples: int = 1, stages: int = 1, name: str = "seed") -> None:
    """Refuse a `seed` whose last derived seed would pass MAX_SEED."""
    if seed is None or images < 1:
        return
    last = sample_seed(seed, images - 1, sample=num_samples - 1, num_samples=num_samples, stage=stages - 1)
    if last > MAX_SEED:
        what = f"{images} image{'s' if images != 1 else ''}" + (f" x {num_samples} samples" if num_samples > 1 else "")
        passes = f" over {stages} stages or passes" if stages > 1 else ""
        raise ValueError(f"{name} + image index must stay at or below 2**64 - 1; {name} {seed} is too large for "
                         f"{what}{passes}. Use a smaller {name}.")


def generators(seed: int, images: int, *, num_samples: int = 1, stage: int = 0, first: int = 0) -> list[torch.Generator]:
    """One CPU generator per sample, image-major, for images `first` to `first + images - 1`."""
    return [torch.Generator("cpu").manual_seed(sample_seed(seed, k, sample=j, num_samples=num_samples, stage=stage))
            for k in range(first, first + images) for j in range(num_samples)]
