"""What `upscale()` and `Cascade` hand back: outputs in the caller's kind, grouped like it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from .images import io as imageio
from .images.resample import bicubic, spatial_size

__all__ = ["UpscaleOutput", "to_caller_kind", "group_like", "stack_if_same", "consistency_error"]


@dataclass
class UpscaleOutput:
    """Everything one `upscale(..., return_dict=True)` call produces.

    Per-image fields are grouped like `images`: one value, a list, or a stack for a batch input.

    Attributes:
        images: the results, exactly what the plain call returns.
        uncertainty: the float32 (H, W) std of the K samples in [0, 1] units; None when K == 1.
        samples: the K samples in the output's kind (K = 1: the result itself).
        consistency: the RMS difference in [0, 1] units between the output's bicubic downsampling
            and the input (0: the output explains the input exactly).
        seconds: wall-clock seconds the call took.
        report: with `return_report=True`, an `ImageReport` per image.
    """

    images: Any
    uncertainty: Any = None
    samples: Any = None
    consistency: Any = None
    seconds: float = 0.0
    report: Any = None


def to_caller_kind(results: Sequence[Tensor], prepared: Sequence[imageio.Prepared], output_type: str | None) -> list[Any]:
    """Model outputs (1, 3, H, W) in [-1, 1] back in the kind, mode and bit depth of the inputs."""
    return [imageio.restore(result, prep, output_type) for result, prep in zip(results, prepared)]


def consistency_error(result: Tensor, lowres: Tensor) -> float:
    """RMS of `bicubic(result) - lowres` in [0, 1] pixel units, inputs in [-1, 1]."""
    down = bicubic(result.float().cpu(), spatial_size(lowres))
    return float(((down - lowres.float().cpu()) / 2).pow(2).mean().sqrt())


def _is_batch(item: Any) -> bool:
    return (isinstance(item, np.ndarray) and item.ndim == 4) or (isinstance(item, Tensor) and item.dim() == 4)


def stack_if_same(values: list[Any]) -> Any:
    """Arrays (or tensors) of one shape and dtype stacked into one; anything else stays a list."""
    if values and all(isinstance(v, np.ndarray) for v in values) and len({(v.shape, v.dtype) for v in values}) == 1:
        return np.stack(values)
    if values and all(isinstance(v, Tensor) for v in values) and len({(v.shape, v.dtype) for v in values}) == 1:
        return torch.stack(values)
    return values


def _regroup(item: Any, values: list[Any]) -> Any:
    """A batch input's values stacked like it (when they stack); any other input's one value."""
    if _is_batch(item):
        return stack_if_same(values)
    return values[0]


def _regroup_samples(item: Any, values: list[list[Any]]) -> Any:
    """K samples per image: a list, stacked (N, K, ...) for a batch input when they stack."""
    if _is_batch(item):
        return stack_if_same([stack_if_same(k_samples) for k_samples in values])
    return values[0]


def _regroup_numbers(item: Any, values: list[float]) -> Any:
    return np.asarray(values, dtype=np.float64) if _is_batch(item) else values[0]


REGROUP: dict[str, Callable[[Any, list[Any]], Any]] = {
    "images": _regroup, "uncertainty": _regroup, "samples": _regroup_samples, "consistency": _regroup_numbers,
    "report": _regroup,
}
"""How each `UpscaleOutput` field of a batch input is put together."""


def group_like(items: Sequence[Any], counts: Sequence[int], per_image: list[Any], field: str = "images",
               single: bool = False) -> Any:
    """Per-image values back into one entry per input item (`counts[i]` images came from item i)."""
    regroup = REGROUP[field]
    grouped, cursor = [], 0
    for item, count in zip(items, counts):
        grouped.append(regroup(item, per_image[cursor : cursor + count]))
        cursor += count
    return grouped[0] if single else grouped
