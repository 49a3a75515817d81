"""Flip self-ensemble: sample j of an image runs on the input flipped one of four ways and is flipped back.

A network is not exactly equivariant to flips, so the mean of K samples taken in different orientations
also averages out its orientation-dependent errors (the geometric self-ensemble of EDSR's "+" results,
Lim et al. 2017), at no extra network calls over the K samples. Flips keep the shape, so images of any
aspect ratio stay batched together (rotations by 90 degrees would swap height and width).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

__all__ = ["ENSEMBLES", "FLIPS", "flip_each", "orientations"]

ENSEMBLES = ("none", "flips")
"""A recipe's `ensemble`: "none" (every sample as given) or "flips" (sample j in orientation FLIPS[j % 4])."""

FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))
"""The dims flipped for sample j % 4: as given, left-right, up-down, both (a half turn)."""


def flip_each(x: Tensor, sample_indices: Sequence[int]) -> Tensor:
    """Row r of (B, C, H, W) `x` flipped as sample `sample_indices[r]` is; applied twice it gives `x` back."""
    if len(sample_indices) != x.shape[0]:
        raise ValueError(f"flip_each needs one sample index per row: {x.shape[0]} rows, got {len(sample_indices)}.")
    if all(j % len(FLIPS) == 0 for j in sample_indices):
        return x
    return torch.cat([row.flip(FLIPS[j % len(FLIPS)]) if j % len(FLIPS) else row
                      for row, j in zip(x.split(1), sample_indices)])


def orientations(ensemble: str, sample_indices: Sequence[int]) -> list[int]:
    """The `flip_each` indices of rows that are samples `sample_indices` under a recipe's `ensemble`."""
    return list(sample_indices) if ensemble == "flips" else [0] * len(sample_indices)
