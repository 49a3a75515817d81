"""What the U-Net predicts (eps as in SR3, v, or x0), and the one conversion between eps and x0:
denoisers return x0 (as in k-diffusion), samplers needing eps use `eps_from_x0`."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["training_target", "to_x0", "eps_from_x0"]


def _bcast(level: Tensor, like: Tensor) -> Tensor:
    return level.to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))


def _coefficients(noise_level: Tensor, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(g, sqrt(1 - g^2), g^2) in float64, shaped to broadcast over `like` (B, ...)."""
    g = noise_level.to(torch.float64).reshape(-1, *([1] * (like.dim() - 1)))
    gamma = g * g
    return g, (1 - gamma).clamp_min(1e-24).sqrt(), gamma


def training_target(prediction: str, x0: Tensor, eps: Tensor, noise_level: Tensor) -> Tensor:
    """The regression target for `x_t = g * x0 + sqrt(1 - g^2) * eps`, with g = noise_level (B,)."""
    if prediction == "eps":
        return eps
    g = _bcast(noise_level, x0)
    s = (1 - g * g).clamp_min(0).sqrt()
    if prediction == "v":
        return g * eps - s * x0
    if prediction == "x0":
        return x0
    raise ValueError(f"Unknown prediction {prediction!r}; expected eps, v or x0.")


def to_x0(prediction: str, x: Tensor, output: Tensor, noise_level: Tensor) -> Tensor:
    """The clean estimate x0 from the network's `output` at sample `x` and noise level g (B,)."""
    if prediction == "x0":
        return output
    g, s, gamma = _coefficients(noise_level, x)
    if prediction == "eps":
        return gamma.rsqrt().to(x.dtype) * x - (1 / gamma - 1).clamp_min(0).sqrt().to(x.dtype) * output
    if prediction == "v":
        return g.to(x.dtype) * x - s.to(x.dtype) * output
    raise ValueError(f"Unknown prediction {prediction!r}; expected eps, v or x0.")


def eps_from_x0(x: Tensor, x0: Tensor, noise_level: Tensor) -> Tensor:
    """The noise eps that takes x0 to `x` at noise level g (B,): (x - g * x0) / sqrt(1 - g^2)."""
    g, s, _ = _coefficients(noise_level, x)
    return (x - g.to(x.dtype) * x0) / s.to(x.dtype)
