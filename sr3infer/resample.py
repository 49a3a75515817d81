"""The one bicubic resampler used by inference, training and the consistency metric."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["bicubic", "quantize", "consistency_projection"]


def bicubic(x: Tensor, size: int | tuple[int, int]) -> Tensor:
    """Anti-aliased bicubic resize of (B, C, H, W) to `size` (int: square, or (H, W)).

    Matches PIL's BICUBIC (a = -0.5, support scaled when downsampling), which the SR3 papers and
    the community checkpoints used, to within 1/255 on 8-bit images. Computed in float32.
    """
    if isinstance(size, int):
        size = (size, size)
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    dtype = x.dtype
    return F.interpolate(x.float(), size=size, mode="bicubic", antialias=True, align_corners=False).to(dtype)


def quantize(x: Tensor) -> Tensor:
    """Round an image in [-1, 1] to the 8-bit grid, as saving and reloading a PNG would."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1


def consistency_projection(x: Tensor, lowres: Tensor, iterations: int = 1) -> Tensor:
    """`x + up(lowres - down(x))`, repeated: make the bicubic downsampling of `x` (nearly) equal `lowres`.

    One pass roughly halves the error (down(up(.)) is not the identity); a few passes make it small.
    x: (B, C, H, W) and lowres: (B, C, h, w), both in [-1, 1], with H/h = W/w the scale.
    """
    for _ in range(iterations):
        down = bicubic(x, tuple(lowres.shape[-2:]))
        x = x + bicubic(lowres - down, tuple(x.shape[-2:]))
    return x
