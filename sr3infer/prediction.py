"""What the U-Net predicts (eps as in SR3, v, or x0) and the conversions to and from eps."""

from __future__ import annotations

from torch import Tensor

__all__ = ["training_target", "to_eps"]


def _bcast(level: Tensor, like: Tensor) -> Tensor:
    return level.to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))


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


def to_eps(prediction: str, x: Tensor, output: Tensor, noise_level: Tensor) -> Tensor:
    """Turn the network's `output` at sample `x` and level g into the eps prediction samplers use."""
    if prediction == "eps":
        return output
    g = _bcast(noise_level, x)
    s = (1 - g * g).clamp_min(1e-12).sqrt()
    if prediction == "v":
        return g * output + s * x
    if prediction == "x0":
        return (x - g * output) / s
    raise ValueError(f"Unknown prediction {prediction!r}; expected eps, v or x0.")
