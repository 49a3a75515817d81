"""Where training draws its noise levels: SR3's uniform draw (~80 % of steps where the residual is
buried in noise), or EDM's log-normal ln(sigma / sigma_data) ~ N(log_mean, log_std²), clamped to the
schedule, with `uniform_fraction` of each batch kept on SR3's draw."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..sampling.schedule import NoiseSchedule

__all__ = ["NOISE_SAMPLINGS", "NoiseLevelSampler"]

NOISE_SAMPLINGS = ("sr3", "lognormal")
EDM_LOG_MEAN = -1.2 - math.log(0.5)  # EDM's P_mean = -1.2 at sigma_data = 0.5, as ln(sigma / sigma_data)
EDM_LOG_STD = 1.2


@dataclass(frozen=True)
class NoiseLevelSampler:
    """Draws training noise levels sqrt(gamma) (float32, (B,)) for a schedule."""

    kind: str = "sr3"
    sigma_data: float = 0.5
    log_mean: float = EDM_LOG_MEAN
    log_std: float = EDM_LOG_STD
    uniform_fraction: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in NOISE_SAMPLINGS:
            raise ValueError(f"Unknown noise sampling {self.kind!r}; expected one of {', '.join(NOISE_SAMPLINGS)}.")
        if not (self.sigma_data > 0 and self.log_std > 0 and 0 <= self.uniform_fraction <= 1):
            raise ValueError(f"Noise sampling needs sigma_data > 0, log_std > 0 and uniform_fraction in [0, 1]; got "
                             f"{self.sigma_data}, {self.log_std}, {self.uniform_fraction}.")

    def sample(self, schedule: NoiseSchedule, batch: int, *, generator: torch.Generator | None = None,
               device=None) -> Tensor:
        uniform = schedule.sample_training_noise_levels(batch, generator=generator)
        if self.kind == "sr3":
            return uniform.to(device)
        normal = torch.randn(batch, generator=generator, dtype=torch.float64)
        sigma = self.sigma_data * torch.exp(self.log_mean + self.log_std * normal)
        levels = schedule.noise_levels
        lognormal = (1 / (1 + sigma * sigma)).sqrt().clamp(min=float(levels[-1]), max=float(levels[1]))
        keep_uniform = torch.rand(batch, generator=generator) < self.uniform_fraction
        return torch.where(keep_uniform, uniform.double(), lognormal).float().to(device)
