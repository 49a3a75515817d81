"""The one bicubic resampler used by inference, training and the consistency metric."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["bicubic", "spatial_size", "quantize", "consistency_projection", "project_onto_input"]


def spatial_size(x: Tensor) -> tuple[int, int]:
    """(H, W) of a (..., H, W) tensor as a pair, for the type checker."""
    return x.shape[-2], x.shape[-1]


def bicubic(x: Tensor, size: int | tuple[int, int]) -> Tensor:
    """Anti-aliased bicubic resize of (B, C, H, W) to `size` (int: square, or (H, W)), in float32:
    PIL's BICUBIC, which SR3 and its community checkpoints used, to within 1/255."""
    if isinstance(size, int):
        size = (size, size)
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    dtype = x.dtype
    return F.interpolate(x.float(), size=size, mode="bicubic", antialias=True, align_corners=False).to(dtype)


def quantize(x: Tensor) -> Tensor:
    """Round an image in [-1, 1] to the 8-bit grid, as saving and reloading a PNG would."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1


def consistency_projection(x: Tensor, lowres: Tensor) -> Tensor:
    """One back-projection pass, `x + up(lowres - down(x))`, roughly halving the error."""
    return x + bicubic(lowres - bicubic(x, spatial_size(lowres)), spatial_size(x))


def project_onto_input(x: Tensor, lowres: Tensor, *, max_iterations: int = 100, tolerance: float = 1e-3) -> Tensor:
    """The final projection: `consistency_projection` alternated with clamping to [-1, 1] (POCS),
    which converges where clamping alone would undo part of a pass. Each image stops on its own
    (`tolerance`, `max_iterations`), so its result does not depend on the batch."""
    size = spatial_size(lowres)
    x = x.clone()
    active = torch.arange(x.shape[0], device=x.device)  # the images still iterating
    for step in range(max_iterations):
        x[active] = consistency_projection(x[active], lowres[active]).clamp(-1, 1)
        if step % 10 == 9:
            error = (bicubic(x[active], size) - lowres[active]).abs().flatten(1).amax(1)
            active = active[error >= tolerance]
            if len(active) == 0:
                break
    return x
