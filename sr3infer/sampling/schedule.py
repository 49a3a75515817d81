"""SR3's training noise schedule (linear betas, T=2000) and the inference grids of gamma built from it."""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch
from torch import Tensor

from ..runtime.validate import MAX_TRAIN_TIMESTEPS, ConfigError, check_float, check_int
from ..errors import reject_unknown_keys

__all__ = ["NoiseSchedule", "SPACINGS"]

SPACINGS = ("linear", "quadratic", "trailing")


@dataclass(frozen=True)
class NoiseSchedule:
    """gamma_t = prod_{s<=t} (1 - beta_s), betas linear from `beta_start` to `beta_end`, in float64
    (as the reference: `1 - gamma` near t=0 cancels badly in float32)."""

    kind: str = "linear"
    num_train_timesteps: int = 2000  # T, the training schedule's length (not the inference steps of a recipe)
    beta_start: float = 1e-6
    beta_end: float = 1e-2

    def __post_init__(self) -> None:
        """Check types and bounds before any grid is computed."""
        if self.kind != "linear":
            raise ConfigError("kind", "'linear': only 'linear' (SR3's) is supported", self.kind)
        object.__setattr__(self, "num_train_timesteps",
                           check_int(self.num_train_timesteps, "num_train_timesteps", 1, MAX_TRAIN_TIMESTEPS))
        object.__setattr__(self, "beta_start", check_float(self.beta_start, "beta_start", 0.0, 1.0, open_low=True,
                                                           open_high=True))
        object.__setattr__(self, "beta_end", check_float(self.beta_end, "beta_end", self.beta_start, 1.0,
                                                         open_high=True))

    @classmethod
    def from_dict(cls, data: dict) -> NoiseSchedule:
        """From `config.json["schedule"]` (the key `num_steps` reads as `num_train_timesteps`)."""
        data = dict(data)
        if "num_steps" in data and "num_train_timesteps" not in data:
            data["num_train_timesteps"] = data.pop("num_steps")
        reject_unknown_keys(data, ("kind", "num_train_timesteps", "beta_start", "beta_end"), "schedule config")
        return cls(**data)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "num_train_timesteps": self.num_train_timesteps, "beta_start": self.beta_start,
                "beta_end": self.beta_end}

    @property
    def betas(self) -> Tensor:
        return torch.linspace(self.beta_start, self.beta_end, self.num_train_timesteps, dtype=torch.float64)

    @property
    def gammas(self) -> Tensor:
        """gamma_t (alpha-bar) for t = 0 .. T-1, float64, decreasing from ~1."""
        return torch.cumprod(1.0 - self.betas, dim=0)

    @property
    def noise_levels(self) -> Tensor:
        """sqrt(gamma) with 1.0 prepended: index t+1 is the level of step t."""
        return torch.cat([torch.ones(1, dtype=torch.float64), self.gammas.sqrt()])

    def inference_grid(
        self,
        num_steps: int,
        *,
        spacing: str = "linear",
        start_noise_level: float | None = None,
    ) -> Tensor:
        """A grid of `num_steps + 1` gammas, noisiest first, ending at 1.0 (float64).

        `num_steps == T` is the training grid (SR3's 2000-step loop); fewer steps pick training
        gammas `linear`ly in t, `quadratic` (denser near the clean end) or `trailing`.
        `start_noise_level` in (0, 1) starts at the first sqrt(gamma) not above it. ValueError for
        other steps or spacings.
        """
        total = self.num_train_timesteps
        if isinstance(num_steps, bool) or not isinstance(num_steps, numbers.Integral):
            raise ValueError(f"num_steps must be an integer, got {num_steps!r}.")
        num_steps = int(num_steps)
        if spacing not in SPACINGS:
            raise ValueError(f"Unknown grid spacing {spacing!r}; expected one of {', '.join(SPACINGS)}.")
        gammas = self.gammas
        first = total - 1  # the noisiest training index used
        if start_noise_level is not None:
            if not 0.0 < float(start_noise_level) < 1.0:
                raise ValueError(f"start_noise_level must be in (0, 1), got {start_noise_level!r}.")
            first = int(torch.searchsorted(-gammas.sqrt(), torch.tensor([-float(start_noise_level)], dtype=torch.float64)))
            first = min(max(first, 0), total - 1)
        available = first + 1
        if not 1 <= num_steps <= available:
            where = f"the schedule's {total}" if start_noise_level is None else f"{available} (at start_noise_level={start_noise_level})"
            raise ValueError(f"num_steps must be between 1 and {where}, got {num_steps}.")
        if spacing == "linear":
            ts = torch.linspace(first, 0, num_steps, dtype=torch.float64).round().long()
        elif spacing == "quadratic":
            ts = (torch.linspace(first**0.5, 0, num_steps, dtype=torch.float64) ** 2).round().long()
        else:  # trailing: first, first - k, ..., ending k-1 steps above 0
            ts = torch.arange(available, 0, -available / num_steps, dtype=torch.float64).round().long() - 1
        ts = torch.unique_consecutive(ts.clamp(0, first))
        if len(ts) < num_steps:  # rounding merged neighbours: fall back to distinct evenly spaced indices
            ts = torch.linspace(first, 0, num_steps, dtype=torch.float64).round().long()
        return torch.cat([gammas[ts], torch.ones(1, dtype=torch.float64)])

    def sample_training_noise_levels(self, batch: int, *, generator: torch.Generator | None = None, device=None) -> Tensor:
        """SR3's training draw: t ~ U{1..T}, then sqrt(gamma) between neighbours; float32 (B,)."""
        levels = self.noise_levels.to(device)
        t = torch.randint(1, self.num_train_timesteps + 1, (batch,), generator=generator, device="cpu").to(device)
        u = torch.rand(batch, generator=generator, device="cpu", dtype=torch.float64).to(device)
        low, high = levels[t], levels[t - 1]
        return (low + u * (high - low)).float()
