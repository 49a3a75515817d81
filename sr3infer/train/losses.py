"""The training loss: L1 or L2 on the prediction target, optionally Min-SNR-γ weighted over noise levels."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["LOSSES", "LOSS_WEIGHTINGS", "MIN_SNR_GAMMA", "min_snr_weights", "training_loss"]

LOSSES = ("l1", "l2")
LOSS_WEIGHTINGS = ("none", "min_snr")
MIN_SNR_GAMMA = 5.0  # Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy"


def min_snr_weights(noise_level: Tensor, prediction: str, gamma: float = MIN_SNR_GAMMA) -> Tensor:
    """Min-SNR-γ weight per sample, float32 (B,): min(SNR, γ) on x0, over SNR on eps, over SNR + 1
    on v, each min(SNR, γ) in x0-space (SNR = g² / (1 - g²))."""
    alpha = noise_level.double() ** 2
    snr = alpha / (1 - alpha)  # 0 at pure noise, inf at g = 1
    if prediction == "x0":
        weights = snr.clamp(max=gamma)
    elif prediction == "eps":
        weights = (gamma / snr).clamp(max=1.0)  # min(SNR, γ) / SNR, finite at SNR 0
    elif prediction == "v":
        weights = snr.clamp(max=gamma) / (snr + 1)
    else:
        raise ValueError(f"Unknown prediction {prediction!r}; expected eps, v or x0.")
    return weights.float()


def training_loss(output: Tensor, target: Tensor, loss: str, weights: Tensor | None = None) -> Tensor:
    """Mean L1 or squared error; with `weights` (B,), each sample's mean error is weighted first."""
    if loss not in LOSSES:
        raise ValueError(f"Unknown loss {loss!r}; expected one of {', '.join(LOSSES)}.")
    if weights is None:
        return F.l1_loss(output, target) if loss == "l1" else F.mse_loss(output, target)
    error = (output - target).abs() if loss == "l1" else (output - target) ** 2
    return (error.flatten(1).mean(1) * weights.to(error.dtype)).mean()
