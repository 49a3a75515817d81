"""`Upscaler`: a model config + U-Net, and `upscale()` that runs the iterative refinement loop."""

from __future__ import annotations

import math
import numbers
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence, cast

import torch
from torch import Tensor, nn

from .images import io as imageio
from . import seeding
from .deprecation import deprecate
from .models.registry import get_architecture
from .models.config import CONSISTENCY_MODES, UNSET, ModelConfig, Recipe
from .models.checkpoints import load_community_checkpoint
from .runtime.devices import default_device, resolve_device, resolve_dtype
from .runtime.fastpath import FastModel
from .hub.fetch import resolve_model_files
from .size_guard import DEFAULT_MAX_OUTPUT_PIXELS, RunEstimate, check_run, estimate_run, slow_run_warning
from .runtime.oom import run_with_fallback
from .images.outscale import finish_size, pass_sizes, size_plan
from .outputs import UpscaleOutput, consistency_error, group_like, to_caller_kind
from .sampling.prediction import to_x0
from .quality.report import image_reports
from .images.resample import bicubic, consistency_projection, project_onto_input, spatial_size
from .sampling.samplers import Callback, Denoiser, get_sampler, randn
from .sampling.tiling import Tile, TiledDenoiser
from .sampling.uncertainty import check_num_samples, ensemble_mean, sample_spread
from .models.weights import (
    build_model, cast_model, check_finite, check_weights_file, is_community_checkpoint, load_weights, read_config, save_model_folder,
)

__all__ = ["Upscaler", "UpscaleOutput", "CONSISTENCY_MODES"]


def _default_device() -> torch.device:
    return default_device()  # CUDA, then MPS, then the CPU (sr3infer.runtime.devices)


def _resolve_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    return resolve_dtype(dtype, device)  # None / "auto": per device (sr3infer.runtime.devices)


class Upscaler:
    """An SR3 super-resolution model ready to run.

    Example:
        >>> up = Upscaler.from_pretrained("sr3-face-8x")
        >>> big = up.upscale(Image.open("face16.png"))
    """

    def __init__(self, config: ModelConfig, model: nn.Module, *, device: str | torch.device | None = None,
                 torch_dtype: torch.dtype | str | None = None) -> None:
        self.config = config
        self.model = model.eval().requires_grad_(False)
        self.fast_path = FastModel(self.model)  # compile / CUDA graphs, both off until enabled
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.source: str | None = None
        self._seconds_per_unet_pixel: dict[tuple[str, torch.dtype], float] = {}  # measured by runs, for estimate()
        self.to(device if device is not None else _default_device(), torch_dtype)

    # Loading and saving.

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        *,
        device: str | torch.device | None = None,
        torch_dtype: torch.dtype | str | None = None,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        token: str | bool | None = None,
        local_files_only: bool | None = None,
        scale: int | None = None,
    ) -> Upscaler:
        """Load a model by name (see `sr3infer models`), model folder, or single `.safetensors` file.

        Args:
            name_or_path: a manifest name such as "sr3-face-8x", a folder with config.json +
                model.safetensors, a safetensors file whose metadata holds the config, or a
                community SR3 checkpoint in safetensors (`denoise_fn.*` keys, see `sr3infer.models.checkpoints`).
            device: "cpu", "cuda", "mps", ... or "auto" (the default): CUDA, then MPS, then CPU.
            torch_dtype: "auto" (the default) picks per device, see `sr3infer.runtime.devices.auto_dtype`.
            revision, cache_dir, token, local_files_only: passed to the Hugging Face Hub download.
            scale: output side / input side of a community checkpoint, which does not record it
                (default 8, as the released 16->128 and 64->512 models); checked against the config otherwise.
        """
        config_path, weights_path = resolve_model_files(
            name_or_path, revision=revision, cache_dir=cache_dir, token=token, local_files_only=local_files_only
        )
        if config_path is None and is_community_checkpoint(weights_path):
            config, state = load_community_checkpoint(weights_path, scale=scale or 8)
        else:
            config = read_config(weights_path, config_path)
            check_weights_file(config, weights_path, config_path)  # before a huge config allocates anything
            state = load_weights(weights_path)
            if scale is not None and scale != config.scale:
                raise ValueError(f"scale={scale} was requested, but {name_or_path} is a x{config.scale} model.")
        check_finite(state, weights_path)
        model = build_model(config, state)
        upscaler = cls(config, model, device=device, torch_dtype=torch_dtype)
        upscaler.source = str(name_or_path)
        return upscaler

    def save_pretrained(self, folder: str | Path, *, dtype: torch.dtype = torch.float32, card: str | None = None) -> Path:
        """Write `config.json` + `model.safetensors` (and a model card if given) to `folder`."""
        return save_model_folder(folder, self.config, self.model.state_dict(), dtype=dtype, card=card)

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | str | None = UNSET) -> Upscaler:
        """Move to `device` ("auto": CUDA, MPS, CPU), keeping the dtype unless `dtype` is given (None or "auto":
        per device, see `sr3infer.runtime.devices`). Returns self."""
        device = resolve_device(device) if device is not None else self.device  # "auto": CUDA, MPS, CPU
        if device.type == "meta":
            raise ValueError("device 'meta' holds shapes but no data, so nothing can be upscaled on it; "
                             "use 'cpu' or 'cuda'.")
        dtype = self.dtype if dtype is UNSET else _resolve_dtype(dtype, device)
        cast_model(self.model, device, dtype)
        # channels_last: faster convolutions on CUDA and CPU (measured: benchmarks/results/unet_speed_cpu.json).
        self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs omit it
        self.device, self.dtype = device, dtype
        self.fast_path.reset()  # compiled code and graphs belong to the old device/dtype
        return self

    def enable_compile(self, mode: str | None = None, *, backend: str = "inductor", enabled: bool = True) -> Upscaler:
        """Run the U-Net through `torch.compile` (compiled on the first call of each shape). Returns self.

        When compile is unavailable or fails (no C compiler, unsupported Python, ...) a warning is
        logged and the U-Net runs eagerly: same results, eager speed.

        Args:
            mode: `torch.compile` mode ("default", "max-autotune-no-cudagraphs", ...); None is "default".
            backend: `torch.compile` backend; "inductor" generates fused kernels.
            enabled: False switches compile off again.
        """
        self.fast_path.configure(compile=enabled, compile_mode=mode or "default", compile_backend=backend)
        return self

    def enable_cuda_graphs(self, enabled: bool = True) -> Upscaler:
        """Capture the U-Net call once per input shape as a CUDA graph and replay it (CUDA only). Returns self.

        Removes the per-kernel launch cost, which dominates small batches. A capture that fails logs
        a warning and the U-Net runs without graphs.

        Raises:
            ValueError: the Upscaler is not on a CUDA device.
        """
        if enabled and self.device.type != "cuda":
            raise ValueError(
                f"CUDA graphs need a CUDA device, but this Upscaler is on {self.device}. "
                "Move it first with .to('cuda'), or leave CUDA graphs off (on CPU use enable_compile())."
            )
        self.fast_path.configure(cuda_graphs=enabled)
        return self

    def __repr__(self) -> str:
        c = self.config
        return (f"Upscaler({self.source or 'model'}: {c.lowres_size}->{c.out_size}, x{c.scale}, "
                f"{c.prediction}-prediction, device={self.device}, dtype={self.dtype})")

    # The denoiser that samplers see.

    def make_denoiser(self, cond: Tensor, lowres: Tensor | None = None, consistency: str = "none") -> Denoiser:
        """`(x, noise_level) -> x0`, the clean estimate, for this model with `cond` (B, 3, H, W) bound.

        For residual models x and x0 live in residual space (image - cond). The clean image is
        clamped to [-1, 1], and with `consistency="every"` first projected onto the low-res input
        (DDNM-style).
        """
        model, config, dtype = self.fast_path, self.config, self.dtype
        condition = get_architecture(config.architecture).condition  # SR3: concat([cond, x]) as channels
        cond_in = cond.to(dtype)
        project = consistency == "every" and lowres is not None

        def denoise(x: Tensor, noise_level: Tensor) -> Tensor:
            inputs = condition(cond_in, x.to(dtype))
            inputs = inputs.contiguous(memory_format=torch.channels_last)
            out = model(inputs, noise_level.float()).float()
            x0 = to_x0(config.prediction, x, out, noise_level)
            image = x0 + cond if config.residual else x0
            if project and lowres is not None:
                image = consistency_projection(image, lowres)
            image = image.clamp(-1, 1)
            return image - cond if config.residual else image

        return denoise


    # Upscaling.

    def tile_plan(self, output_size: tuple[int, int], tile_size: int | None = None,
                  tile_overlap: int | None = None) -> tuple[int, int] | None:
        """`(tile, overlap)` in output pixels for an output of `output_size` (H, W), or None to run it whole.

        The one place a tiling is decided; `estimate`, `upscale` and `upscale_tensor` all ask it.

        Args:
            output_size: the output size (H, W), multiples of `config.scale`.
            tile_size: tile side in output pixels, rounded down to a multiple of the scale; None
                (default) tiles with `config.out_size` only when the output is larger than that; 0 never tiles.
                At least half the trained output size (`config.out_size // 2`): smaller tiles cost many
                U-Net calls and lose quality.
            tile_overlap: minimum overlap of neighbouring tiles in output pixels, rounded up to a
                multiple of the scale; default a quarter of the tile.

        Returns:
            None when tiling is off or one tile covers the whole output (then the result is exactly
            that of untiled sampling).

        Raises:
            ValueError: a negative or non-integer tile size, a tile smaller than half the trained output
                size (or than the scale), or an overlap that is not smaller than the tile.
        """
        scale = self.config.scale
        if tile_size is None:
            tile_size = self.config.out_size if max(output_size) > self.config.out_size else 0
        if isinstance(tile_size, bool) or not isinstance(tile_size, numbers.Integral) or tile_size < 0:
            raise ValueError(f"tile_size must be a non-negative integer (0: no tiling), got {tile_size!r}.")
        tile_size = int(tile_size)
        if tile_size == 0:
            return None
        minimum = max(scale, -(-(self.config.out_size // 2) // scale) * scale)
        if tile_size < minimum:
            raise ValueError(
                f"tile_size must be at least {minimum} output pixels (half the model's trained {self.config.out_size} "
                f"px output, on its scale-{scale} grid), got {tile_size}; smaller tiles multiply the U-Net calls and "
                "lose quality. Use 0 to turn tiling off.")
        tile = tile_size // scale * scale
        if tile_overlap is None:
            tile_overlap = tile // 4
        if isinstance(tile_overlap, bool) or not isinstance(tile_overlap, numbers.Integral) or tile_overlap < 0:
            raise ValueError(f"tile_overlap must be a non-negative integer, got {tile_overlap!r}.")
        tile_overlap = int(tile_overlap)
        overlap = -(-tile_overlap // scale) * scale
        if overlap >= tile:
            raise ValueError(
                f"tile_overlap ({tile_overlap}, {overlap} on the scale-{scale} grid) must be smaller than the "
                f"tile ({tile}); lower the overlap or raise tile_size."
            )
        if output_size[0] <= tile and output_size[1] <= tile:
            return None
        return tile, overlap

    def estimate(self, input_size: tuple[int, int], *, batch: int = 1, num_steps: int | None = None,
                 tile_size: int | None = None, tile_overlap: int | None = None, tile_batch_size: int = 8) -> RunEstimate:
        """What upscaling `batch` inputs of `input_size` (h, w) in one call costs, from sizes alone (arithmetic only).

        Returns a `sr3infer.size_guard.RunEstimate`: output size, tiles, U-Net calls (`num_steps`
        defaults to the model's recipe), the estimated peak memory in bytes, and `seconds`: the
        expected time from the U-Net speed measured by this Upscaler's last run on its device, or None
        (unknown) before its first run.
        """
        out = (int(input_size[0]) * self.config.scale, int(input_size[1]) * self.config.scale)
        steps = self.config.sampling.num_steps if num_steps is None else num_steps
        run = estimate_run(self.config, out, batch=batch, tiling=self.tile_plan(out, tile_size, tile_overlap),
                           tile_batch_size=tile_batch_size, num_steps=steps, dtype=self.dtype)
        rate = self._seconds_per_unet_pixel.get((str(self.device), self.dtype))
        return replace(run, seconds=None if rate is None else rate * _unet_pixels(run) * run.num_steps)

    def upscale_video(self, source: Any, output_path: str | Path, **kwargs: Any) -> Any:
        """Upscale a video file (or an iterable of frames with `fps=`) frame by frame into `output_path`: the same
        seed for every frame, frame rate, timestamps and audio copied, written atomically; needs PyAV
        (`pip install "sr3infer[video]"`). See `sr3infer.video.upscale_video`; returns a `sr3infer.video.VideoResult`."""
        from .video import upscale_video

        return upscale_video(self, source, output_path, **kwargs)

    @torch.inference_mode()
    def measure_speed(self) -> float:
        """Time one network call on a trained-size input (after one warm-up call) and remember it for `estimate`;
        returns seconds per call. What a run's cost line quotes before the run starts."""
        side = self.config.out_size
        lowres = torch.zeros(1, 3, self.config.lowres_size, self.config.lowres_size, device=self.device)
        denoise = self.make_denoiser(bicubic(lowres, side))
        x, level = torch.zeros(1, 3, side, side, device=self.device), torch.full((1,), 0.5, device=self.device)
        denoise(x, level)
        started = time.perf_counter()
        denoise(x, level)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - started
        self._seconds_per_unet_pixel[(str(self.device), self.dtype)] = seconds / (side * side)
        return seconds

    @torch.inference_mode()
    def upscale_tensor(
        self,
        lowres: Tensor,
        *,
        preset: str | None = None,
        recipe: Recipe | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        progress: bool = True,
        callback: Callback | None = None,
        tile_size: int | None = None,
        tile_overlap: int | None = None,
        tile_batch_size: int = 8,
        max_output_pixels: int | None = DEFAULT_MAX_OUTPUT_PIXELS,
        **settings: Any,
    ) -> Tensor:
        """Upscale `lowres` (B, 3, h, w) in [-1, 1] to (B, 3, h*scale, w*scale) in [-1, 1].

        A recipe with `num_samples` K > 1 (e.g. `num_samples=4` here) returns each image's K-sample mean, as
        `upscale` does; a list of generators then has one per sample (B * K, image-major).

        Outputs larger than a tile are denoised tile by tile, blending every step (see `tile_plan`);
        `tile_batch_size` tiles go through the U-Net at a time. Before anything is allocated the
        run is estimated (`estimate`) and refused over `max_output_pixels` (see `upscale`). `settings` are
        the recipe's parts and sampler options, as in `upscale` (num_steps=, sampler=, spacing=,
        start_noise_level=, consistency=, eta=, ...); an unknown one is a ValueError naming it.

        Raises:
            RuntimeError: sampling produced NaN or Inf (broken weights or an unstable recipe).
        """
        if not isinstance(lowres, Tensor) or lowres.dim() != 4 or lowres.shape[1] != self.config.channels:
            shape = tuple(lowres.shape) if isinstance(lowres, Tensor) else type(lowres).__name__
            raise ValueError(f"Expected lowres of shape (B, {self.config.channels}, h, w), got {shape}.")
        recipe = self.sampling_recipe(recipe, preset, **settings)
        k = recipe.num_samples
        call = self._plan_call([spatial_size(lowres)] * lowres.shape[0], recipe, batch_size=lowres.shape[0] * k,
                               tile_size=tile_size, tile_overlap=tile_overlap, tile_batch_size=tile_batch_size,
                               max_output_pixels=max_output_pixels, num_samples=k)
        _check_generator(generator)
        if k == 1:
            return self._sample(lowres, call, generator, progress, callback)
        if isinstance(generator, (list, tuple)) and len(generator) != lowres.shape[0] * k:
            raise ValueError(f"Got {len(generator)} generators for {lowres.shape[0]} images x {k} samples (the "
                             f"recipe's num_samples); pass one per sample ({lowres.shape[0] * k}, image-major) or a single one.")
        samples = self._sample(lowres.repeat_interleave(k, 0), call, generator, progress, callback)
        return torch.cat([ensemble_mean(group, lowres[i : i + 1], recipe.consistency).to(samples.dtype)
                          for i, group in enumerate(samples.split(k))])

    def _sample(self, lowres: Tensor, call: _Call, generator: Any, progress: bool, callback: Callback | None) -> Tensor:
        """One sampling run of a checked call (`_plan_call`): (B, 3, h, w) in [-1, 1] -> (B, 3, H, W) in [-1, 1]."""
        recipe, gammas = call.recipe, call.gammas
        consistency = recipe.consistency
        if not torch.isfinite(lowres).all():
            raise ValueError("lowres contains NaN or Inf values.")
        lowres = lowres.to(self.device, torch.float32)
        size = (lowres.shape[-2] * self.config.scale, lowres.shape[-1] * self.config.scale)
        cond = bicubic(lowres, size)
        tiling = call.tiling(size)
        if tiling is None:
            denoise = self.make_denoiser(cond, lowres, consistency)
        else:
            scale = self.config.scale

            def make_tile_denoiser(tiles: Sequence[Tile]) -> Denoiser:
                cond_tiles = torch.cat([tile.crop(cond) for tile in tiles])
                lowres_tiles = torch.cat([tile.crop(lowres, scale) for tile in tiles])
                return self.make_denoiser(cond_tiles, lowres_tiles, consistency)

            denoise = TiledDenoiser(make_tile_denoiser, tile_size=tiling[0], overlap=tiling[1], align=scale,
                                    tile_batch_size=call.tile_batch_size)
        g0 = gammas[0].to(torch.float32)
        noise = randn(cond.shape, generator=generator, device=self.device, dtype=torch.float32)
        if recipe.start_noise_level is None:
            x = noise
        else:  # truncated start: the noised bicubic upsampling (zero residual) at the first grid level
            x_start = torch.zeros_like(cond) if self.config.residual else cond
            x = g0.sqrt() * x_start + (1 - g0).sqrt() * noise
        sample = get_sampler(recipe.sampler)
        started = time.perf_counter()
        x = sample(denoise, x, gammas, clip_denoised=False, generator=generator, callback=callback,
                   disable=not progress, **recipe.options)  # the denoiser clamps, in image space
        if x.is_cuda:
            torch.cuda.synchronize(x.device)  # CUDA runs asynchronously: time the work, not its launch
        self._record_speed(call, lowres.shape[0], size, time.perf_counter() - started)
        if not torch.isfinite(x).all():
            raise RuntimeError(
                f"Sampling produced NaN or Inf values ({recipe.sampler}, {recipe.num_steps} "
                f"step{'s' if recipe.num_steps != 1 else ''}): the model's weights "
                "are broken or the recipe is unstable. Check the model files, or try another sampler or step count."
            )
        image = x + cond if self.config.residual else x
        if consistency in ("final", "every"):
            return project_onto_input(image, lowres)
        return image.clamp(-1, 1)

    def _record_speed(self, call: _Call, batch: int, size: tuple[int, int], seconds: float) -> None:
        """Seconds per U-Net input pixel per step on this device and dtype, from a finished run (for `estimate`)."""
        run = estimate_run(self.config, size, batch=batch, tiling=call.tiling(size),
                           tile_batch_size=call.tile_batch_size, num_steps=len(call.gammas) - 1, dtype=self.dtype)
        work = _unet_pixels(run) * run.num_steps
        if work > 0 and seconds > 0:
            self._seconds_per_unet_pixel[(str(self.device), self.dtype)] = seconds / work

    def upscale(
        self,
        images: Any,
        *,
        num_steps: int | None = None,
        sampler: str | None = None,
        spacing: str | None = None,
        start_noise_level: float | None = UNSET,
        consistency: str | None = None,
        eta: float | None = None,
        preset: str | None = None,
        recipe: Recipe | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        seed: int | None = None,
        value_range: tuple[float, float] | str = (0, 1),
        batch_size: int = 8,
        progress: bool = True,
        output_type: str | None = None,
        callback: Callback | None = None,
        tile_size: int | None = None,
        tile_overlap: int | None = None,
        num_samples: int | None = None,
        return_dict: bool = False,
        max_output_pixels: int | None = DEFAULT_MAX_OUTPUT_PIXELS,
        outscale: float | None = None,
        size: tuple[int, int] | None = None,
        return_report: bool = False,
        **deprecated: Any,
    ) -> Any:
        """Upscale one image or a list of images by `config.scale` (or to any size: `outscale`, `size`).

        Args:
            images: a PIL image, numpy array (H, W[, C]) uint8/uint16/float in [0, 1] or a batch
                (N, H, W, C), a torch tensor (C, H, W) / (N, C, H, W) in [0, 1], a file path, or a list.
            num_steps, sampler, spacing, start_noise_level, consistency, eta: the sampling recipe;
                each one left out comes from `preset` (start_noise_level's default is UNSET, left out,
                because None is one of its values: start from pure noise).
            preset: a named recipe of the model, chosen on its validation set by a stated rule:
                "fidelity" (best PSNR) or "realism" (lowest KID at a PSNR floor); see `config.presets`.
                None: the model's default recipe (`config.sampling`, the realism preset for the bundled models).
            recipe: a whole recipe (a `Recipe`, e.g. `config.recipe("fidelity", num_steps=10)`)
                instead of `preset`; the arguments above override parts of it.
            generator / seed: randomness. `seed` gives image k the seed `seed + k`, so a batch and
                the same images one at a time give identical results. With `num_samples=K`, sample j
                of image k gets the seed `seed + k * K + j` (image k alone with seed `seed + k * K`
                gives the same samples). A list of generators has one per sample, K per image,
                image-major; a single generator draws all the call's noise in turn.
            value_range: the range of float arrays and tensors: (0, 1) (default), (-1, 1), or "auto"
                ([-1, 1] when a value of the batch is below 0; see `imageio.prepare`).
            batch_size: images per U-Net call (same-size images are batched together); when
                tiling, also the number of tiles per U-Net call. With `num_samples`, samples per U-Net call.
            progress: show a tqdm bar over the denoising steps.
            callback: called after every denoising step with a dict: "step" and "total" (of this sampling pass),
                "x0" (the current clean estimate), "x", "noise_level". Returning False, or raising
                `sr3infer.Cancelled`, stops the call with `Cancelled`; the batch runner then writes nothing more.
            output_type: "pil", "np" or "pt"; default the kind of the input (paths give PIL).
            tile_size, tile_overlap: in output pixels. Outputs larger than a tile are denoised as
                overlapping tiles blended at every step, so memory does not grow with the image.
                Default: tiles of the trained output size when the output is larger than it;
                0 turns tiling off. See `tile_plan`.
            num_samples: K samples per image (1 to 256). The result is their per-pixel mean (an
                ensemble estimate: smoother, higher PSNR than one sample), projected onto the input like
                any output; K = 1 is a plain sample. Costs K times the U-Net calls. None: the recipe's
                (`Recipe.num_samples`; 1 unless the preset was measured best with more).
            return_dict: return an `UpscaleOutput` (images, uncertainty, samples, consistency, seconds)
                instead of the images alone. With K >= 2 its `uncertainty` holds each image's map, a
                float32 (H, W) numpy array: the per-pixel standard deviation across the K samples (ddof=1),
                averaged over colour channels, in [0, 1] pixel units; high where the model invents detail
                the input does not pin down, not an error bound (see README); and `samples` the K samples.
            max_output_pixels: refuse (ValueError, before any image is decoded) an output over this
                many pixels per image, or a batch whose estimated peak memory is over 160 bytes per
                allowed pixel, and at least 4 GiB (16 GB by default: too many images or tiles per U-Net
                call, or a large image untiled). The default, 100 MP, suits a 24 GiB machine; None
                switches the check off. See `estimate`.
            outscale, size: any output size (`sr3infer.images.outscale`): the model runs at its scale, then the result
                is resized (antialiased bicubic on float data) to round(outscale x input) per side, or to
                `size` (width, height). Above the model's scale it runs again on its own output, with a warning.
            return_uncertainty, return_samples: deprecated (0.1's tuple returns, removed in 0.3.0); use return_dict.
            return_report: return an `UpscaleOutput` whose `report` holds each image's `sr3infer.quality.report.ImageReport`:
                consistency, the uncertainty's mean and 95th percentile (K >= 2) and the made-up mask.

        Returns:
            The same kind and count as `images`: one result for one image, a list for a list,
            a batch array/tensor for a batch array/tensor. With `return_dict=True`, an `UpscaleOutput`
            whose `images` is exactly that, and whose per-image fields are grouped the same way.
        """
        legacy = _legacy_returns(deprecated)
        if legacy:
            out = self.upscale(images, num_steps=num_steps, sampler=sampler, spacing=spacing,
                               start_noise_level=start_noise_level, consistency=consistency, eta=eta, preset=preset,
                               recipe=recipe, generator=generator, seed=seed, value_range=value_range,
                               batch_size=batch_size, progress=progress, output_type=output_type, callback=callback,
                               tile_size=tile_size, tile_overlap=tile_overlap, num_samples=num_samples,
                               return_dict=True, max_output_pixels=max_output_pixels, outscale=outscale, size=size)
            return (out.images, *(getattr(out, name) for name in legacy))
        started = time.perf_counter()
        if output_type not in (None, "pil", "np", "pt"):
            raise ValueError(f"Unknown output_type {output_type!r}; expected 'pil', 'np' or 'pt'.")
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
        seed = seeding.check_seed(seed)
        _check_generator(generator)
        if num_samples is not None:
            num_samples = check_num_samples(num_samples)
        recipe = self.sampling_recipe(recipe, preset, num_steps=num_steps, sampler=sampler, spacing=spacing,
                                      start_noise_level=start_noise_level, consistency=consistency, eta=eta,
                                      num_samples=num_samples)
        num_samples = recipe.num_samples
        single = not isinstance(images, (list, tuple))
        items: Sequence[Any] = [images] if single else list(images)
        if not items:
            return UpscaleOutput(images=[], seconds=time.perf_counter() - started) if return_dict else []
        # Resolved and checked once, from the sizes alone, before any image is decoded or converted.
        sizes = [s for item in items for s in imageio.peek_sizes(item)]
        plan = size_plan(sizes, self.config.scale, outscale=outscale, size=size)  # None: the model's own scale
        calls = [self._plan_call(pass_input_sizes, recipe, batch_size=int(batch_size), tile_size=tile_size,
                                 tile_overlap=tile_overlap, max_output_pixels=max_output_pixels, num_samples=num_samples)
                 for pass_input_sizes in pass_sizes(plan, sizes, self.config.scale)]
        call = calls[0]
        prepared: list[list[imageio.Prepared]] = [imageio.prepare(item, value_range) for item in items]
        flat = [p for group in prepared for p in group]
        self._warn_if_off_size([tuple(p.rgb.shape[-2:]) for p in flat], call)
        if generator is not None and seed is not None:
            raise ValueError("Pass either generator or seed, not both.")
        seeding.check_room(seed, len(flat), num_samples=num_samples, stages=len(calls))
        generators = self._per_image_generators(len(flat), generator, seed, num_samples)
        results = self._sample_images([p.rgb for p in flat], call, generators, generator, progress, callback)

        def merge(samples: list[Tensor], rgb: Tensor) -> Tensor:
            return samples[0] if num_samples == 1 else ensemble_mean(torch.cat(samples), rgb, recipe.consistency)

        def run_pass(rgbs: list[Tensor], index: int) -> list[list[Tensor]]:  # the model again on its own output
            gens = self._per_image_generators(len(rgbs), generator, seed, num_samples, stage=index)
            return self._sample_images(rgbs, calls[index], gens, generator, progress, callback)

        if plan is None:
            merged = [merge(samples, prep.rgb) for samples, prep in zip(results, flat)]
        else:
            merged, results = finish_size(plan, [p.rgb for p in flat], results, run_pass, merge)
        counts = [len(group) for group in prepared]
        images = to_caller_kind(merged, flat, output_type)
        grouped = group_like(items, counts, images, "images", single)
        if not (return_dict or return_report):
            return grouped
        output = UpscaleOutput(images=grouped)
        maps = None
        if num_samples > 1:
            maps = [sample_spread(torch.cat(samples), prep.gray) for samples, prep in zip(results, flat)]
            output.uncertainty = group_like(items, counts, maps, "uncertainty", single)
            per_sample = [to_caller_kind(samples, [prep] * len(samples), output_type) for samples, prep in zip(results, flat)]
        else:  # the one sample is the result
            per_sample = [[image] for image in images]
        output.samples = group_like(items, counts, per_sample, "samples", single)
        errors = [consistency_error(result, prep.rgb) for result, prep in zip(merged, flat)]
        output.consistency = group_like(items, counts, errors, "consistency", single)
        if return_report:
            reports = image_reports(merged, [p.rgb for p in flat], maps, num_samples, self.config, errors)
            output.report = group_like(items, counts, reports, "report", single)
        output.seconds = time.perf_counter() - started
        return output

    def _sample_images(self, rgbs: list[Tensor], call: _Call, generators: list[torch.Generator] | None,
                       generator: Any, progress: bool, callback: Callback | None) -> list[list[Tensor]]:
        """Each image's K samples (1, 3, H, W) in [-1, 1]: same-size images batched, `call.batch_size` samples per run."""
        samples_per_image = call.num_samples
        results: list[list[Tensor]] = [[] for _ in rgbs]
        by_size: dict[tuple[int, int], list[int]] = {}
        for index, rgb in enumerate(rgbs):
            by_size.setdefault(spatial_size(rgb), []).append(index)
        for indices in by_size.values():
            units = [(i, k) for i in indices for k in range(samples_per_image)]  # (image, sample), batched together
            for start in range(0, len(units), call.batch_size):
                chunk = units[start : start + call.batch_size]
                lowres = torch.cat([rgbs[i] for i, _ in chunk])
                gens = [generators[i * samples_per_image + k] for i, k in chunk] if generators is not None else generator
                scale = self.config.scale
                tiling = call.tiling((lowres.shape[-2] * scale, lowres.shape[-1] * scale))
                with torch.inference_mode():  # out of memory: smaller tiles, then one by one (sr3infer.runtime.oom)
                    out = run_with_fallback(
                        lambda lr, gen, tile, batch: self._sample(lr, call.retiled(tile, batch), gen, progress, callback),
                        lowres, gens, tiling=tiling, batch_size=call.tile_batch_size, config=self.config,
                        device=self.device).cpu()
                for (i, _), result in zip(chunk, out):
                    results[i].append(result[None])
        return results

    def _per_image_generators(self, count: int, generator: Any, seed: int | None,
                              samples: int = 1, stage: int = 0) -> list[torch.Generator] | None:
        """One generator per sample (`samples` per image, image-major), or None for a single shared generator."""
        if seed is not None:
            return seeding.generators(seed, count, num_samples=samples, stage=stage)
        if isinstance(generator, (list, tuple)):
            if len(generator) != count * samples:
                if samples == 1:
                    raise ValueError(
                        f"Got {len(generator)} generators for {count} images; pass one per image or a single one.")
                raise ValueError(f"Got {len(generator)} generators for {count} images x {samples} samples; pass one "
                                 f"per sample ({count * samples}, image-major) or a single one.")
            return list(generator)
        return None

    def sampling_recipe(self, recipe: Recipe | None = None, preset: str | None = None,
                        **settings: Any) -> Recipe:
        """The recipe a call runs: `recipe`, else `preset`'s, else the model's default, with `settings` overriding
        parts of it (None, or UNSET for start_noise_level, keeps a part); checked before anything runs."""
        if recipe is not None and preset is not None:
            raise ValueError("Pass either recipe or preset, not both.")
        return self.config.recipe(preset, **settings) if recipe is None else recipe.override(**settings)

    def _plan_call(self, sizes: list[tuple[int, int]], recipe: Recipe, *, batch_size: int,
                   tile_size: int | None, tile_overlap: int | None, max_output_pixels: Any, num_samples: int = 1,
                   tile_batch_size: int | None = None) -> _Call:
        """Resolve a call once: its noise grid and tiling, checked against the limits for the input `sizes` (h, w).

        Everything is arithmetic on sizes, before any image is decoded or converted. With `num_samples` K,
        each image is K samples: K times the U-Net inputs, and K outputs held at once.
        """
        max_output_pixels = _check_max_output_pixels(max_output_pixels)
        gammas = self.config.schedule.inference_grid(recipe.num_steps, spacing=recipe.spacing,
                                                     start_noise_level=recipe.start_noise_level)
        call = _Call(self, recipe, gammas, batch_size, tile_size, tile_overlap,
                     batch_size if tile_batch_size is None else tile_batch_size, num_samples)
        for size in sorted(set(sizes)):
            run = self.estimate(size, batch=min(batch_size, sizes.count(size) * num_samples), num_steps=len(gammas) - 1,
                                tile_size=tile_size, tile_overlap=tile_overlap, tile_batch_size=call.tile_batch_size)
            check_run(run, max_output_pixels)
            if max_output_pixels is not None and run.output_pixels * num_samples > max_output_pixels:
                height, width = run.size
                raise ValueError(
                    f"{num_samples} samples of a {width}x{height} output are {run.output_pixels * num_samples / 1e6:,.1f} "
                    f"MP held at once, over max_output_pixels = {max_output_pixels / 1e6:,.1f} MP. Use fewer samples "
                    "(num_samples, --samples), a smaller input, or raise the limit (max_output_pixels=, "
                    "--max-output-pixels) on a machine with that much memory."
                )
            slow = slow_run_warning(run, self.config.lowres_size)
            if slow is not None:
                warnings.warn(slow, stacklevel=4)
        return call

    def _warn_if_off_size(self, sizes: list[tuple[int, int]], call: _Call) -> None:
        """Warn about inputs that reach the model whole at another size than it was trained on (tiles are trained-size)."""
        trained, scale = self.config.lowres_size, self.config.scale
        odd = {size for size in sizes if size != (trained, trained)
               and (min(size) < trained or call.tiling((size[0] * scale, size[1] * scale)) is None)}
        if odd:
            shown = ", ".join(f"{w}x{h}" for h, w in sorted(odd))
            warnings.warn(
                f"This model was trained on {trained}x{trained} inputs; got {shown}. The output is "
                f"{self.config.scale}x larger, but results are best at the trained size.",
                stacklevel=3,
            )


@dataclass
class _Call:
    """One `upscale` call resolved once: recipe, noise grid, batching, and the tile plan of each output size."""

    upscaler: Upscaler
    recipe: Recipe
    gammas: Tensor
    batch_size: int
    tile_size: int | None
    tile_overlap: int | None
    tile_batch_size: int
    num_samples: int = 1
    plans: dict[tuple[int, int], tuple[int, int] | None] = field(default_factory=dict)

    def tiling(self, output_size: tuple[int, int]) -> tuple[int, int] | None:
        """`Upscaler.tile_plan` of this call for `output_size`, computed once per size."""
        if output_size not in self.plans:
            self.plans[output_size] = self.upscaler.tile_plan(output_size, self.tile_size, self.tile_overlap)
        return self.plans[output_size]

    def retiled(self, tile_size: int | None, tile_batch_size: int | None) -> _Call:
        """This call with another tile side (0: untiled) and tiles per U-Net call; None, None: itself."""
        if tile_size is None:
            return self
        overlap = self.tile_overlap if self.tile_overlap is not None and self.tile_overlap < tile_size else None
        return replace(self, tile_size=tile_size, tile_overlap=overlap, plans={},
                       tile_batch_size=self.tile_batch_size if tile_batch_size is None else tile_batch_size)


def _unet_pixels(run: RunEstimate) -> int:
    """U-Net input pixels of one step of `run` (every tile, or every whole image)."""
    height, width = run.size
    if run.tile is None:
        return run.batch * height * width
    return run.batch * run.tiles_per_image * min(run.tile, height) * min(run.tile, width)


def _check_max_output_pixels(value: Any) -> int | None:
    """`max_output_pixels` as a positive int, or None (no limit); NaN, strings and bools are refused by type."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"max_output_pixels must be a positive number of pixels or None (no limit), got {value!r} "
                        f"({type(value).__name__}).")
    if not math.isfinite(value) or value < 1:
        raise ValueError(f"max_output_pixels must be a finite number of pixels >= 1, or None (no limit), got {value!r}.")
    return int(cast(float, value))


def _check_generator(generator: Any) -> None:
    """None, a torch.Generator, or a list/tuple of them; anything else is a TypeError naming what was got."""
    if generator is None or isinstance(generator, torch.Generator):
        return
    if isinstance(generator, (list, tuple)):
        wrong = [type(g).__name__ for g in generator if not isinstance(g, torch.Generator)]
        if not wrong:
            return
        got = f"a {type(generator).__name__} holding {wrong[0]}"
    else:
        got = type(generator).__name__
    raise TypeError(f"generator must be a torch.Generator or a list of them (one per image), got {got}; "
                    "for a number use seed= instead.")


_LEGACY_RETURNS = {"return_uncertainty": "uncertainty", "return_samples": "samples"}


def _legacy_returns(arguments: dict[str, Any]) -> list[str]:
    """The `UpscaleOutput` fields that 0.1's `return_uncertainty` / `return_samples` asked for, in the old tuple's
    order; any other unexpected keyword is the TypeError Python would raise."""
    unknown = sorted(set(arguments) - set(_LEGACY_RETURNS))
    if unknown:
        raise TypeError(f"upscale() got an unexpected keyword argument {unknown[0]!r}")
    fields = []
    for name, field_name in _LEGACY_RETURNS.items():
        if name in arguments:
            deprecate(f"upscale({name}=...)", "0.3.0",
                      f"Use upscale(return_dict=True) and read the output's .{field_name}.", stacklevel=4)
            if arguments[name]:
                fields.append(field_name)
    return fields
