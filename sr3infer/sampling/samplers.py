"""Samplers over SR3's continuous noise level: ancestral (SR3), DDIM and DPM-Solver++(2M)."""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable

import torch
from torch import Tensor
from tqdm.auto import trange

from ..errors import Cancelled
from ..runtime.validate import OPTION_BOUNDS, ConfigError, check_float
from .prediction import eps_from_x0

__all__ = ["Denoiser", "Callback", "SAMPLERS", "sample_ancestral", "sample_ddim", "sample_dpmpp_2m", "get_sampler",
           "sampler_option_defaults", "sampler_option_names", "check_sampler_options", "randn"]

Denoiser = Callable[[Tensor, Tensor], Tensor]
"""`(x (B, C, H, W), noise_level (B,) float64) -> x0`, the clean estimate, with the condition already bound."""

Callback = Callable[[dict], Any]
"""Called after every denoising step with {"step", "total", "i", "x", "x0", "noise_level"} (step 1..total of this
sampling pass; x0 is the current clean estimate). Returning False, or raising `errors.Cancelled`, stops the run."""


def _report_step(callback: Callback | None, i: int, total: int, x: Tensor, x0: Tensor, gamma: Tensor) -> None:
    """Hand one finished step to `callback`; a False answer cancels the run."""
    if callback is None:
        return
    info = {"step": i + 1, "total": total, "i": i, "x": x, "x0": x0, "noise_level": float(gamma.sqrt())}
    if callback(info) is False:
        raise Cancelled(f"Cancelled by the step callback after step {i + 1} of {total}; nothing was written.")


def randn(
    shape: tuple[int, ...] | torch.Size,
    *,
    generator: torch.Generator | list[torch.Generator] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Gaussian noise; a list of generators draws batch item k from generator k (as one by one)."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"Got {len(generator)} generators for a batch of {shape[0]}.")
        return torch.cat([randn((1, *shape[1:]), generator=g, device=device, dtype=dtype) for g in generator])
    source = generator.device if generator is not None else device
    return _to_device(torch.randn(shape, generator=generator, device=source, dtype=dtype), device)


def _to_device(t: Tensor, device: torch.device | str | None) -> Tensor:
    """Move a host tensor to `device` (to CUDA pinned and non-blocking, so the host never waits)."""
    if device is None or t.device == torch.device(device):
        return t
    if t.device.type == "cpu" and torch.device(device).type == "cuda":
        # A plain .to("cuda") of pageable memory synchronizes the stream every step.
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _denoise(denoise: Denoiser, x: Tensor, gamma: Tensor, clip: bool) -> tuple[Tensor, Tensor]:
    """(x0, noise level) at grid point `gamma`; the level goes to the denoiser in float64."""
    level = _to_device(gamma.sqrt().expand(x.shape[0]).contiguous(), x.device)
    x0 = denoise(x, level)
    return (x0.clamp(-1, 1) if clip else x0), level


def _coef(value: Tensor, x: Tensor) -> Tensor:
    """A float64 coefficient as a 0-d host tensor in x's dtype: a kernel argument, no sync."""
    return value.to(dtype=x.dtype)


@torch.no_grad()
def sample_ancestral(
    denoise: Denoiser,
    x: Tensor,
    gammas: Tensor,
    *,
    clip_denoised: bool = True,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    disable: bool = False,
) -> Tensor:
    """SR3's ancestral sampler (DDPM posterior) on any gamma grid; on the full grid, SR3's loop."""
    gammas = gammas.to(torch.float64).cpu()
    for i in trange(len(gammas) - 1, disable=disable, desc="ancestral"):
        g, g_next = gammas[i], gammas[i + 1]
        x0, _ = _denoise(denoise, x, g, clip_denoised)
        alpha = g / g_next  # this step's alpha (1 - beta) on the respaced grid
        beta = 1 - alpha
        coef1 = beta * g_next.sqrt() / (1 - g)
        coef2 = (1 - g_next) * alpha.sqrt() / (1 - g)
        x = _coef(coef1, x) * x0 + _coef(coef2, x) * x
        if g_next < 1:
            std = (beta * (1 - g_next) / (1 - g)).clamp_min(1e-20).sqrt()
            x = x + _coef(std, x) * randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        _report_step(callback, i, len(gammas) - 1, x, x0, g)
    return x


@torch.no_grad()
def sample_ddim(
    denoise: Denoiser,
    x: Tensor,
    gammas: Tensor,
    *,
    eta: float = 0.0,
    clip_denoised: bool = True,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    disable: bool = False,
) -> Tensor:
    """DDIM (Song et al. 2021, eq. 12) on SR3's continuous noise level; eta=0 is deterministic."""
    gammas = gammas.to(torch.float64).cpu()
    for i in trange(len(gammas) - 1, disable=disable, desc="ddim"):
        g, g_next = gammas[i], gammas[i + 1]
        x0, level = _denoise(denoise, x, g, clip_denoised)
        eps = eps_from_x0(x, x0, level)
        sigma = eta * ((1 - g_next) / (1 - g) * (1 - g / g_next)).clamp_min(0).sqrt()
        x = _coef(g_next.sqrt(), x) * x0 + _coef((1 - g_next - sigma**2).clamp_min(0).sqrt(), x) * eps
        if sigma > 0:
            x = x + _coef(sigma, x) * randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        _report_step(callback, i, len(gammas) - 1, x, x0, g)
    return x


@torch.no_grad()
def sample_dpmpp_2m(
    denoise: Denoiser,
    x: Tensor,
    gammas: Tensor,
    *,
    clip_denoised: bool = True,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    disable: bool = False,
) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, alg. 2) in data prediction, on the VP gamma grid."""
    del generator  # deterministic
    gammas = gammas.to(torch.float64).cpu()
    # Half log-SNR lambda = log(alpha / sigma); infinite at gamma = 1, handled as the final x0 step.
    lambdas = 0.5 * (gammas.log() - (1 - gammas).log())
    x0_prev: Tensor | None = None
    for i in trange(len(gammas) - 1, disable=disable, desc="dpmpp_2m"):
        g, g_next = gammas[i], gammas[i + 1]
        x0, _ = _denoise(denoise, x, g, clip_denoised)
        if g_next >= 1:
            # Last step: the solution at gamma = 1 is the data prediction itself.
            x = x0
        else:
            h = lambdas[i + 1] - lambdas[i]
            ratio = ((1 - g_next) / (1 - g)).sqrt()  # sigma_next / sigma
            phi = -torch.expm1(-h)  # 1 - e^{-h}
            r = (lambdas[i] - lambdas[i - 1]) / h if x0_prev is not None else None
            # First order on the first step and where this step is over twice the last one: on SR3's
            # linear-t grid the step to t=0 is ~10x longer in lambda, and extrapolating x0 that far
            # overshoots: on Gaussian data the samples come out far too spread.
            if r is None or r < 0.5 or x0_prev is None:
                d = x0  # first-order (DDIM) step
            else:
                d = _coef(1 + 1 / (2 * r), x) * x0 - _coef(1 / (2 * r), x) * x0_prev
            x = _coef(ratio, x) * x + _coef(g_next.sqrt() * phi, x) * d
        x0_prev = x0
        _report_step(callback, i, len(gammas) - 1, x, x0, g)
    return x


SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "ancestral": sample_ancestral,
    "ddim": sample_ddim,
    "dpmpp_2m": sample_dpmpp_2m,
}


def get_sampler(name: str) -> Callable[..., Tensor]:
    """A sampler by name, with an error that lists the known ones."""
    try:
        return SAMPLERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown sampler {name!r}; expected one of {', '.join(sorted(SAMPLERS))}.") from None


COMMON_PARAMETERS = ("denoise", "x", "gammas", "clip_denoised", "generator", "callback", "disable")
"""The leading signature every sampler shares; its other keyword arguments are its options (such as DDIM's eta)."""


def sampler_option_defaults(name: str) -> dict[str, float]:
    """The options sampler `name` takes, with their defaults (`{"eta": 0.0}` for ddim)."""
    parameters = inspect.signature(get_sampler(name)).parameters
    return {k: p.default for k, p in parameters.items() if k not in COMMON_PARAMETERS}


def sampler_option_names() -> set[str]:
    """Every option some registered sampler takes (what `upscale` passes on to samplers)."""
    return {name for sampler in SAMPLERS for name in sampler_option_defaults(sampler)}


def check_sampler_options(name: str, options: Any) -> dict[str, float]:
    """`options` with sampler `name`'s defaults, refusing unknown or out-of-bounds ones."""
    defaults = sampler_option_defaults(name)
    if not isinstance(options, dict):
        raise ConfigError("options", f"an object of {name} options ({', '.join(defaults) or 'none'})", options)
    for key, value in options.items():
        if key not in defaults:
            takes = f"takes {', '.join(defaults)}" if defaults else "takes no options"
            raise ValueError(f"The {name} sampler {takes}; got {key}={value!r}. Leave it out or choose a sampler "
                             f"that takes it ({', '.join(n for n in SAMPLERS if key in sampler_option_defaults(n))}).")
        low, high = OPTION_BOUNDS.get(key, (-math.inf, math.inf))
        check_float(value, key, low, high)
    return {**defaults, **{k: float(v) for k, v in options.items()}}
