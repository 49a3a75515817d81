"""The denoiser the samplers see: an SR3 network with its condition bound, as `(x, noise_level) -> x0`.

The wrapper is apart from the loops (k-diffusion's `external.py` beside its `sampling.py`): any sampler of
`samplers.py` runs over any such function, whatever the network predicts (eps, v or x0).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..images.resample import consistency_projection
from .prediction import to_x0

__all__ = ["ConditionedDenoiser"]


class ConditionedDenoiser:
    """`(x, noise_level) -> x0` of `network` with the condition `cond` (B, C, H, W) bound.

    For residual models x and x0 live in residual space (image - cond). The clean image is clamped to [-1, 1],
    and with `consistency="every"` first projected onto `lowres` (DDNM-style).

    Args:
        network: `(network input, noise_level (B,)) -> prediction`, run in `dtype`.
        condition: `(cond, x) -> network input` (SR3: the two concatenated as channels).
        prediction: what the network predicts, "eps", "v" or "x0".
        residual: the model diffuses image - cond.
    """

    def __init__(self, network: Callable[[Tensor, Tensor], Tensor], condition: Callable[[Tensor, Tensor], Tensor],
                 prediction: str, residual: bool, dtype: torch.dtype, cond: Tensor, lowres: Tensor | None = None,
                 consistency: str = "none") -> None:
        self.network, self.condition, self.prediction, self.residual = network, condition, prediction, residual
        self.dtype, self.cond, self.lowres = dtype, cond, lowres
        self.cond_in = cond.to(dtype)
        self.project = consistency == "every" and lowres is not None

    def __call__(self, x: Tensor, noise_level: Tensor) -> Tensor:
        inputs = self.condition(self.cond_in, x.to(self.dtype)).contiguous(memory_format=torch.channels_last)
        out = self.network(inputs, noise_level.float()).float()
        x0 = to_x0(self.prediction, x, out, noise_level)
        image = x0 + self.cond if self.residual else x0
        if self.project and self.lowres is not None:
            image = consistency_projection(image, self.lowres)
        image = image.clamp(-1, 1)
        return image - self.cond if self.residual else image
