"""What a run will cost (output pixels, peak memory, U-Net calls), estimated before allocating."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .models.registry import UNET_MAPS_PER_CHANNEL, get_architecture
from .models.config import ModelConfig
from .sampling.tiling import tile_count

__all__ = ["DEFAULT_MAX_OUTPUT_PIXELS", "RunEstimate", "estimate_run", "check_run", "slow_run_warning",
           "UNET_MAPS_PER_CHANNEL"]

DEFAULT_MAX_OUTPUT_PIXELS = 100_000_000
"""Largest output per image (100 MP, e.g. 10000x10000) that `upscale()` accepts by default, sized for a 24 GiB machine."""

MEMORY_PER_ALLOWED_PIXEL = 160
"""Bytes of estimated peak memory a run may use per allowed output pixel (16 GB at the default limit) ..."""

MIN_MEMORY_BUDGET = 4 * 2**30
"""... but never less than this, so that a low pixel limit does not refuse ordinary batches."""

# Both are upper bounds of what benchmarks/memory_per_pixel.py measures (benchmarks/results/memory_per_pixel.json).
STATE_BYTES_PER_PIXEL = 96
"""Sampler state per output pixel: x, the condition, eps, x0, noise and temporaries in float32."""

# The network's activations per pixel of a call come from its architecture entry (`Architecture.bytes_per_pixel`);
# for SR3's U-Net that is UNET_MAPS_PER_CHANNEL x inner_channel elements of the U-Net's dtype.

SLOW_RUN_FACTOR = 100
"""Warn when one image costs more than this many times the U-Net work of one trained-size image."""


@dataclass(frozen=True)
class RunEstimate:
    """One sampling call: `batch` images of `size` (H, W) output pixels, tiled or whole."""

    size: tuple[int, int]
    batch: int
    tile: int | None              # tile side in output pixels, None when untiled
    tiles_per_image: int          # U-Net inputs per image per step (1 when untiled)
    inputs_per_call: int          # images (untiled) or tiles per U-Net call
    unet_calls_per_step: int
    num_steps: int
    peak_bytes: int
    work_per_image: float         # U-Net work per image relative to one trained-size image
    seconds: float | None = None  # expected time from a U-Net speed measured on this device; None: not measured yet

    @property
    def output_pixels(self) -> int:
        return self.size[0] * self.size[1]

    @property
    def unet_calls(self) -> int:
        return self.unet_calls_per_step * self.num_steps


def estimate_run(
    config: ModelConfig,
    size: tuple[int, int],
    *,
    batch: int,
    tiling: tuple[int, int] | None,
    tile_batch_size: int,
    num_steps: int,
    dtype: torch.dtype = torch.float32,
) -> RunEstimate:
    """Estimate one `upscale_tensor` call of `batch` images of output `size` (H, W) from sizes
    alone, `tiling` as `Upscaler.tile_plan` gives it (the memory model: the constants above)."""
    height, width = size
    if tiling is None:
        tiles, per_call, calls_per_step, unet_pixels = 1, batch, 1, batch * height * width
    else:
        tile, overlap = tiling  # counted by arithmetic, never listed: an absurd size is refused at once
        tiles = tile_count(height, tile, overlap, config.scale) * tile_count(width, tile, overlap, config.scale)
        per_call = min(batch * tiles, tile_batch_size)
        calls_per_step = -(-batch * tiles // tile_batch_size)
        unet_pixels = per_call * min(tile, height) * min(tile, width)
    element_size = torch.empty((), dtype=dtype).element_size()
    unet_bytes = get_architecture(config.architecture).bytes_per_pixel(config.network, element_size)
    peak = batch * height * width * STATE_BYTES_PER_PIXEL + unet_pixels * unet_bytes
    trained = config.out_size**2
    work = tiles if tiling is not None else max(1.0, height * width / trained)
    return RunEstimate(size=(height, width), batch=batch, tile=None if tiling is None else tiling[0],
                       tiles_per_image=tiles, inputs_per_call=per_call, unet_calls_per_step=calls_per_step,
                       num_steps=num_steps, peak_bytes=peak, work_per_image=work)


def check_run(estimate: RunEstimate, max_output_pixels: int | None) -> None:
    """Refuse a run whose output is over `max_output_pixels` or whose estimated peak memory is over
    its budget, with the numbers and the way out (None: no check)."""
    if max_output_pixels is None:
        return
    height, width = estimate.size
    budget = max(max_output_pixels * MEMORY_PER_ALLOWED_PIXEL, MIN_MEMORY_BUDGET)
    cost = (f"about {_gib(estimate.peak_bytes)} of memory and {estimate.unet_calls:,} U-Net calls "
            f"({estimate.num_steps} step{'s' if estimate.num_steps != 1 else ''} x {estimate.unet_calls_per_step:,})")
    if estimate.output_pixels > max_output_pixels:
        raise ValueError(
            f"The output would be {width}x{height} = {_pixels(estimate.output_pixels)} per image, over "
            f"max_output_pixels = {_pixels(max_output_pixels)}; it needs {cost}. Use a smaller input or a model "
            "with a smaller scale, or raise the limit (max_output_pixels=, --max-output-pixels) on a machine with "
            "that much memory."
        )
    if estimate.peak_bytes > budget:
        per_call = (f"{estimate.inputs_per_call} whole {width}x{height} images" if estimate.tile is None
                    else f"{estimate.inputs_per_call} tiles of {estimate.tile} px")
        raise ValueError(
            f"This batch needs {cost}, over the {_gib(budget)} allowed with max_output_pixels = "
            f"{_pixels(max_output_pixels)} ({per_call} per U-Net call). Use a smaller batch_size "
            "(--batch-size: images, and tiles, per U-Net call), tiles (tile_size, --tile), or raise the limit "
            "(max_output_pixels=, --max-output-pixels) on a machine with that much memory."
        )


def slow_run_warning(estimate: RunEstimate, lowres_size: int) -> str | None:
    """A warning when each image costs over `SLOW_RUN_FACTOR` trained-size images, else None."""
    if estimate.work_per_image <= SLOW_RUN_FACTOR:
        return None
    height, width = estimate.size
    how = (f"{estimate.tiles_per_image:,} tiles of {estimate.tile} px per step" if estimate.tile is not None
           else "an untiled U-Net input that large")
    return (f"A {width}x{height} output is {how}, {estimate.work_per_image:,.0f}x the work of one "
            f"{lowres_size}x{lowres_size} input: {estimate.unet_calls:,} U-Net calls in all. Expect it to take long; "
            "a smaller input or a model with a smaller scale is faster.")


def _gib(count: int) -> str:
    return f"{count / 2**30:,.1f} GiB"


def _pixels(count: int) -> str:
    return f"{count / 1e6:,.1f} MP" if count >= 100_000 else f"{count:,} pixels"
