"""`Upscaler`: a model config + U-Net, and `upscale()` that runs the iterative refinement loop."""

from __future__ import annotations

import math
import numbers
import time
import warnings
from dataclasses import replace
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
from .images.outscale import pass_sizes, resize, size_plan
from .outputs import UpscaleOutput, consistency_error, group_like, to_caller_kind
from .quality.report import image_reports
from .images.resample import bicubic, project_onto_input, spatial_size
from .plan import CallPlan, Generators, PassPlan
from .sampling.denoiser import ConditionedDenoiser
from .sampling.samplers import Callback, Denoiser, get_sampler, randn, sampler_option_names
from .sampling.tiling import Tile, TiledDenoiser, plan_tiles
from .sampling.flips import flip_each, orientations as flip_orientations
from .sampling.uncertainty import check_num_samples, sample_spread
from .models.weights import (
    build_model, cast_model, check_finite, check_weights_file, is_community_checkpoint, load_weights, read_config, save_model_folder,
)

__all__ = ["Upscaler", "UpscaleOutput", "CONSISTENCY_MODES"]


def _default_device() -> torch.device:
    return default_device()  # CUDA, then MPS, then the CPU (sr3infer.runtime.devices)


def _resolve_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    return resolve_dtype(dtype, device)  # None / "auto": per device (sr3infer.runtime.devices)


class Upscaler:
    """An SR3 model ready to run: `Upscaler.from_pretrained(name).upscale(image)`."""

    def __init__(self, config: ModelConfig, model: nn.Module, *, device: str | torch.device | None = None,
                 torch_dtype: torch.dtype | str | None = None) -> None:
        self.config = config
        self.model = model.eval().requires_grad_(False)
        self.fast_path = FastModel(self.model)  # compile / CUDA graphs, both off until enabled
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.source: str | None = None
        self._seconds_per_unet_pixel: dict[tuple[str, torch.dtype], float] = {}  # for estimate()
        self._students: dict[str, Upscaler] = {}  # distilled students, loaded once
        self._hub_options: dict[str, Any] = {}  # how this model was fetched, for its students
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
        """Load a model by name (see `sr3infer models`), model folder, or `.safetensors` file.

        Args:
            name_or_path: a manifest name ("sr3-face-8x"), a folder with config.json and
                model.safetensors, a safetensors file with the config in its metadata, or a
                community SR3 checkpoint (`denoise_fn.*` keys).
            device: "cpu", "cuda", "mps", ... or "auto" (default): CUDA, then MPS, then CPU.
            torch_dtype: "auto" (default) picks per device (`sr3infer.runtime.devices.auto_dtype`).
            revision, cache_dir, token, local_files_only: passed to the Hugging Face Hub download.
            scale: output side / input side of a community checkpoint, which does not record it
                (default 8); checked against the config otherwise.
        """
        config_path, weights_path = resolve_model_files(
            name_or_path, revision=revision, cache_dir=cache_dir, token=token, local_files_only=local_files_only
        )
        if config_path is None and is_community_checkpoint(weights_path):
            config, state = load_community_checkpoint(weights_path, scale=scale or 8)
        else:
            config = read_config(weights_path, config_path)
            check_weights_file(config, weights_path, config_path)  # before a huge config allocates
            state = load_weights(weights_path)
            if scale is not None and scale != config.scale:
                raise ValueError(f"scale={scale} was requested, but {name_or_path} is a x{config.scale} model.")
        check_finite(state, weights_path)
        model = build_model(config, state)
        upscaler = cls(config, model, device=device, torch_dtype=torch_dtype)
        upscaler.source = str(name_or_path)
        upscaler._hub_options = {"cache_dir": cache_dir, "token": token, "local_files_only": local_files_only}
        return upscaler

    def save_pretrained(self, folder: str | Path, *, dtype: torch.dtype = torch.float32, card: str | None = None) -> Path:
        """Write `config.json`, `model.safetensors` and a model card if given to `folder`."""
        return save_model_folder(folder, self.config, self.model.state_dict(), dtype=dtype, card=card)

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | str | None = UNSET) -> Upscaler:
        """Move to `device` ("auto": CUDA, MPS, CPU) and `dtype` if given. Returns self."""
        device = resolve_device(device) if device is not None else self.device
        if device.type == "meta":
            raise ValueError("device 'meta' holds shapes but no data, so nothing can be upscaled on it; "
                             "use 'cpu' or 'cuda'.")
        dtype = self.dtype if dtype is UNSET else _resolve_dtype(dtype, device)
        cast_model(self.model, device, dtype)
        # channels_last: faster convolutions (benchmarks/results/unet_speed_cpu.json); torch's stubs
        # omit the overload.
        self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.device, self.dtype = device, dtype
        self.fast_path.reset()  # compiled code and graphs belong to the old device/dtype
        self._students = {}  # loaded again, on this device and dtype, when a recipe asks for one
        return self

    def weights_for(self, recipe: Recipe) -> Upscaler:
        """The Upscaler whose network runs `recipe`: this one, or the distilled student that
        `recipe.weights` names (beside this model's folder, else by name), loaded once."""
        name = recipe.weights
        if name is None:
            return self
        if name not in self._students:
            beside = Path(self.source).parent / name if self.source and Path(self.source).is_dir() else None
            student = Upscaler.from_pretrained(beside if beside is not None and beside.is_dir() else name,
                                               device=self.device, torch_dtype=self.dtype, **self._hub_options)
            mine, theirs = self.config, student.config
            if (theirs.scale, theirs.lowres_size, theirs.prediction, theirs.residual, theirs.schedule) != (
                    mine.scale, mine.lowres_size, mine.prediction, mine.residual, mine.schedule):
                raise ValueError(f"The recipe runs the weights of {name!r}, which do not share this model's scale, "
                                 "trained size, prediction and noise schedule; a student must be distilled from "
                                 "this model. Check the preset's \"weights\" in config.json.")
            self._students[name] = student
        return self._students[name]

    def enable_compile(self, mode: str | None = None, *, backend: str = "inductor", enabled: bool = True) -> Upscaler:
        """Run the U-Net through `torch.compile` (eagerly, warning, on failure). Returns self."""
        self.fast_path.configure(compile=enabled, compile_mode=mode or "default", compile_backend=backend)
        return self

    def enable_cuda_graphs(self, enabled: bool = True) -> Upscaler:
        """Replay the U-Net as one CUDA graph per input shape, saving the kernel launches that
        dominate small batches (ValueError off CUDA). Returns self."""
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
        """`(x, noise_level) -> x0` with `cond` bound (`sampling.denoiser.ConditionedDenoiser`); x0 is clamped (and
        with `consistency="every"` projected onto `lowres`) in image space."""
        config = self.config
        return ConditionedDenoiser(self.fast_path, get_architecture(config.architecture).condition, config.prediction,
                                   config.residual, self.dtype, cond, lowres, consistency)

    # Upscaling.

    def tile_plan(self, output_size: tuple[int, int], tile_size: int | None = None,
                  tile_overlap: int | None = None) -> tuple[int, int] | None:
        """`(tile, overlap)` in output pixels for an output of `output_size` (H, W), or None.

        Args:
            output_size: the output size (H, W), multiples of `config.scale`.
            tile_size: tile side in output pixels, at least `config.out_size // 2`; None tiles with
                `config.out_size` only above that size, 0 never tiles.
            tile_overlap: least overlap in output pixels; default a quarter of the tile.

        Returns:
            None when tiling is off or one tile covers the output (exactly the untiled result).

        Raises:
            ValueError: a negative or non-integer tile size, a tile under half the trained size, or
                an overlap not smaller than the tile.
        """
        return plan_tiles(self.config.scale, self.config.out_size, output_size, tile_size, tile_overlap)

    def estimate(self, input_size: tuple[int, int], *, batch: int = 1, num_steps: int | None = None,
                 tile_size: int | None = None, tile_overlap: int | None = None, tile_batch_size: int = 8) -> RunEstimate:
        """What upscaling `batch` inputs of `input_size` (h, w) costs, from sizes alone.

        Returns:
            A `RunEstimate`: output size, tiles, U-Net calls, peak memory in bytes, and `seconds`
            from the last measured speed (None before the first run).
        """
        out = (int(input_size[0]) * self.config.scale, int(input_size[1]) * self.config.scale)
        steps = self.config.sampling.num_steps if num_steps is None else num_steps
        run = estimate_run(self.config, out, batch=batch, tiling=self.tile_plan(out, tile_size, tile_overlap),
                           tile_batch_size=tile_batch_size, num_steps=steps, dtype=self.dtype)
        rate = self._seconds_per_unet_pixel.get((str(self.device), self.dtype))
        return replace(run, seconds=None if rate is None else rate * _unet_pixels(run) * run.num_steps)

    def upscale_video(self, source: Any, output_path: str | Path, **kwargs: Any) -> Any:
        """Upscale a video file into `output_path` (`sr3infer.video.upscale_video`); needs PyAV."""
        from .video import upscale_video

        return upscale_video(self, source, output_path, **kwargs)

    @torch.inference_mode()
    def measure_speed(self) -> float:
        """Time one network call on a trained-size input and remember it for `estimate`."""
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

    def plan(
        self,
        input_sizes: Sequence[tuple[int, int]],
        recipe: Recipe | None = None,
        *,
        batch_size: int = 8,
        tile_size: int | None = None,
        tile_overlap: int | None = None,
        tile_batch_size: int | None = None,
        max_output_pixels: int | None = DEFAULT_MAX_OUTPUT_PIXELS,
        seed: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        outscale: float | None = None,
        size: tuple[int, int] | None = None,
        stage: int = 0,
    ) -> CallPlan:
        """Resolve and check a call on inputs of `input_sizes` (h, w) before any image is decoded.

        Arguments as `upscale`; `recipe` None is the default; `stage` offsets the seeds (cascades).

        Returns:
            The `CallPlan` that `run_plan` runs.
        """
        recipe = self.config.recipe() if recipe is None else recipe
        self.weights_for(recipe)  # a student's files are found (or refused) now
        max_output_pixels = _check_max_output_pixels(max_output_pixels)
        seed = seeding.check_seed(seed)
        _check_generator(generator)
        if generator is not None and seed is not None:
            raise ValueError("Pass either generator or seed, not both.")
        sizes = [(int(h), int(w)) for h, w in input_sizes]
        resize_plan = size_plan(sizes, self.config.scale, outscale=outscale, size=size)
        per_pass = pass_sizes(resize_plan, sizes, self.config.scale)
        seeding.check_room(seed, len(sizes), num_samples=recipe.num_samples, stages=stage + len(per_pass))
        gammas = self.config.schedule.inference_grid(recipe.num_steps, spacing=recipe.spacing,
                                                     start_noise_level=recipe.start_noise_level)
        passes = [PassPlan(self.config, recipe, gammas, batch_size, tile_size, tile_overlap,
                           batch_size if tile_batch_size is None else tile_batch_size, seed, generator, stage + p)
                  for p in range(len(per_pass))]
        passes[0].sample_generators(len(sizes))  # a list of the wrong length is refused now
        calls = sum(self._check_pass(plan, pass_input_sizes, max_output_pixels)
                    for plan, pass_input_sizes in zip(passes, per_pass))
        return CallPlan(passes, resize_plan, sizes, network_calls=calls)

    def _check_pass(self, plan: PassPlan, sizes: list[tuple[int, int]], max_output_pixels: int | None) -> int:
        """The size guard of one pass over inputs of `sizes`; returns its network calls."""
        k, calls = plan.num_samples, 0
        for size in sorted(set(sizes)):
            run = self.estimate(size, batch=min(plan.batch_size, sizes.count(size) * k), num_steps=plan.num_steps,
                                tile_size=plan.tile_size, tile_overlap=plan.tile_overlap,
                                tile_batch_size=plan.tile_batch_size)
            check_run(run, max_output_pixels)
            if max_output_pixels is not None and run.output_pixels * k > max_output_pixels:
                height, width = run.size
                raise ValueError(
                    f"{k} samples of a {width}x{height} output are {run.output_pixels * k / 1e6:,.1f} "
                    f"MP held at once, over max_output_pixels = {max_output_pixels / 1e6:,.1f} MP. Use fewer samples "
                    "(num_samples, --samples), a smaller input, or raise the limit (max_output_pixels=, "
                    "--max-output-pixels) on a machine with that much memory."
                )
            slow = slow_run_warning(run, self.config.lowres_size)
            if slow is not None:
                warnings.warn(slow, stacklevel=5)
            calls += sizes.count(size) * k * run.num_steps * run.tiles_per_image
        return calls

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
        """Upscale `lowres` (B, 3, h, w) to (B, 3, h*scale, w*scale), both in [-1, 1], in one batch.

        `settings` as in `upscale`; with `num_samples` K > 1 each image is the mean of K samples.

        Raises:
            RuntimeError: sampling produced NaN or Inf (broken weights or an unstable recipe).
        """
        if not isinstance(lowres, Tensor) or lowres.dim() != 4 or lowres.shape[1] != self.config.channels:
            shape = tuple(lowres.shape) if isinstance(lowres, Tensor) else type(lowres).__name__
            raise ValueError(f"Expected lowres of shape (B, {self.config.channels}, h, w), got {shape}.")
        recipe = self.sampling_recipe(recipe, preset, **settings)
        k, count = recipe.num_samples, lowres.shape[0]
        plan = self.plan([spatial_size(lowres)] * count, recipe, batch_size=count * k, tile_size=tile_size,
                         tile_overlap=tile_overlap, tile_batch_size=tile_batch_size,
                         max_output_pixels=max_output_pixels, generator=generator).passes[0]
        orientations = flip_orientations(recipe.ensemble, [j for _ in range(count) for j in range(k)])
        samples = self.sample(flip_each(lowres.repeat_interleave(k, 0), orientations), plan, generator, progress,
                              callback)
        samples = flip_each(samples, orientations)
        if k == 1:
            return samples
        return torch.cat([plan.merge(list(group.split(1)), lowres[i : i + 1]).to(samples.dtype)
                          for i, group in enumerate(samples.split(k))])

    def sample(self, lowres: Tensor, plan: PassPlan, generator: Generators, progress: bool = True,
               callback: Callback | None = None) -> Tensor:
        """One sampling run of a planned pass: (B, 3, h, w) -> (B, 3, H, W), in [-1, 1]."""
        runner = self.weights_for(plan.recipe)
        if runner is not self:  # a student's weights: the same pass on its network
            return runner.sample(lowres, replace(plan, recipe=replace(plan.recipe, weights=None)), generator,
                                 progress, callback)
        recipe, gammas = plan.recipe, plan.gammas
        consistency = recipe.consistency
        if not torch.isfinite(lowres).all():
            raise ValueError("lowres contains NaN or Inf values.")
        lowres = lowres.to(self.device, torch.float32)
        size = (lowres.shape[-2] * self.config.scale, lowres.shape[-1] * self.config.scale)
        cond = bicubic(lowres, size)
        tiling = plan.tiling(size)
        if tiling is None:
            denoise = self.make_denoiser(cond, lowres, consistency)
        else:
            scale = self.config.scale

            def make_tile_denoiser(tiles: Sequence[Tile]) -> Denoiser:
                cond_tiles = torch.cat([tile.crop(cond) for tile in tiles])
                lowres_tiles = torch.cat([tile.crop(lowres, scale) for tile in tiles])
                return self.make_denoiser(cond_tiles, lowres_tiles, consistency)

            denoise = TiledDenoiser(make_tile_denoiser, tile_size=tiling[0], overlap=tiling[1], align=scale,
                                    tile_batch_size=plan.tile_batch_size)
        g0 = gammas[0].to(torch.float32)
        noise = randn(cond.shape, generator=generator, device=self.device, dtype=torch.float32)
        if recipe.start_noise_level is None:
            x = noise
        else:  # truncated start: the noised bicubic upsampling at the first level
            x_start = torch.zeros_like(cond) if self.config.residual else cond
            x = g0.sqrt() * x_start + (1 - g0).sqrt() * noise
        sample = get_sampler(recipe.sampler)
        started = time.perf_counter()
        x = sample(denoise, x, gammas, clip_denoised=False, generator=generator, callback=callback,
                   disable=not progress, **recipe.options)  # the denoiser clamps, in image space
        if x.is_cuda:
            torch.cuda.synchronize(x.device)  # asynchronous: time the work, not its launch
        self._record_speed(plan, lowres.shape[0], size, time.perf_counter() - started)
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

    def _record_speed(self, plan: PassPlan, batch: int, size: tuple[int, int], seconds: float) -> None:
        """Remember seconds per U-Net pixel and step on this device and dtype, for `estimate`."""
        run = estimate_run(self.config, size, batch=batch, tiling=plan.tiling(size),
                           tile_batch_size=plan.tile_batch_size, num_steps=plan.num_steps, dtype=self.dtype)
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
        ensemble: str | None = None,
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
        **sampler_options: Any,
    ) -> Any:
        """Upscale one image or a list of images by `config.scale`, or to any size.

        Args:
            images: a PIL image, numpy array (H, W[, C]) or batch (N, H, W, C), a tensor (C, H, W)
                or (N, C, H, W) in [0, 1], a file path, or a list of them.
            num_steps, sampler, spacing, start_noise_level, consistency, num_samples: recipe parts
                overriding the preset's (start_noise_level None: pure noise).
            ensemble: "flips" takes sample j of K in the j-th of four flipped orientations, so the
                mean also averages the network's orientation errors (no extra calls); "none" as given.
            preset: a named recipe of `config.presets` ("fidelity", ...); None: the default.
            recipe: a whole `Recipe` instead of a preset; the arguments above override it.
            sampler_options: the sampler's own options (DDIM's `eta`, ...).
            generator, seed: randomness; with `seed`, sample j of image k uses `seed + k*K + j`
                whatever the batching. Generators: one per sample (image-major), or one for all.
            value_range: of float arrays and tensors: (0, 1) (default), (-1, 1), or "auto".
            batch_size: samples (and tiles) per U-Net call; same-size images go together.
            progress: a tqdm bar over the denoising steps.
            callback: called after each step with {"step", "total", "x0", "x", "noise_level"};
                returning False or raising `sr3infer.Cancelled` stops the call with `Cancelled`.
            output_type: "pil", "np" or "pt"; default the kind of the input (paths give PIL).
            tile_size, tile_overlap: in output pixels (see `tile_plan`); 0 turns tiling off.
            return_dict: return an `UpscaleOutput` (samples and uncertainty when K >= 2, ...).
            return_report: return an `UpscaleOutput` with each image's `ImageReport` too.
            max_output_pixels: refuse, before decoding, an output over this many pixels or a batch
                over its memory budget (see `estimate`); None: no limit.
            outscale, size: any output size: the model (again above its scale, with a warning), then
                a resize to round(outscale x input) or to `size` (width, height).

        Returns:
            The same kind and count as `images`, or an `UpscaleOutput`.
        """
        legacy = _legacy_returns(sampler_options)
        if legacy:
            out = self.upscale(images, num_steps=num_steps, sampler=sampler, spacing=spacing,
                               start_noise_level=start_noise_level, consistency=consistency, ensemble=ensemble,
                               preset=preset,
                               recipe=recipe, generator=generator, seed=seed, value_range=value_range,
                               batch_size=batch_size, progress=progress, output_type=output_type, callback=callback,
                               tile_size=tile_size, tile_overlap=tile_overlap, num_samples=num_samples,
                               return_dict=True, max_output_pixels=max_output_pixels, outscale=outscale, size=size,
                               **sampler_options)
            return (out.images, *(getattr(out, name) for name in legacy))
        started = time.perf_counter()
        if output_type not in (None, "pil", "np", "pt"):
            raise ValueError(f"Unknown output_type {output_type!r}; expected 'pil', 'np' or 'pt'.")
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
        # 1. the recipe
        recipe = self.sampling_recipe(recipe, preset, num_steps=num_steps, sampler=sampler, spacing=spacing,
                                      start_noise_level=start_noise_level, consistency=consistency, ensemble=ensemble,
                                      num_samples=None if num_samples is None else check_num_samples(num_samples),
                                      **sampler_options)
        single = not isinstance(images, (list, tuple))
        items: Sequence[Any] = [images] if single else list(images)
        if not items:
            return UpscaleOutput(images=[], seconds=time.perf_counter() - started) if return_dict else []
        # 2. the plan, from the sizes alone
        plan = self.plan([s for item in items for s in imageio.peek_sizes(item)], recipe, batch_size=int(batch_size),
                         tile_size=tile_size, tile_overlap=tile_overlap, max_output_pixels=max_output_pixels,
                         seed=seed, generator=generator, outscale=outscale, size=size)
        # 3. the images, decoded and converted
        prepared: list[list[imageio.Prepared]] = [imageio.prepare(item, value_range) for item in items]
        flat = [p for group in prepared for p in group]
        plan.passes[0].warn_if_off_size([spatial_size(p.rgb) for p in flat])
        # 4. every pass sampled, then the resize
        merged, samples = self.run_plan([p.rgb for p in flat], plan, progress=progress, callback=callback)
        # 5. the caller's kind, grouped like the input
        output = _collect_output(items, [len(group) for group in prepared], flat, merged, samples, self.config,
                                 output_type=output_type, single=single, details=return_dict or return_report,
                                 report=return_report)
        if isinstance(output, UpscaleOutput):
            output.seconds = time.perf_counter() - started
        return output

    def run_plan(self, rgbs: list[Tensor], plan: CallPlan, *, progress: bool = True,
                 callback: Callback | None = None) -> tuple[list[Tensor], list[list[Tensor]]]:
        """Run a planned call on images (1, 3, h, w) in [-1, 1]: outputs and K samples of each."""
        inputs, outputs, samples = rgbs, rgbs, [[rgb] for rgb in rgbs]
        for pass_plan in plan.passes:  # more than one: the model again on its own output
            samples = self.sample_images(inputs, pass_plan, pass_plan.sample_generators(len(inputs)), progress,
                                         callback)
            outputs = [pass_plan.merge(image_samples, rgb) for image_samples, rgb in zip(samples, inputs)]
            inputs = outputs
        if plan.size is not None:
            targets = [plan.size.target(spatial_size(rgb)) for rgb in rgbs]
            outputs = [resize(output, target) for output, target in zip(outputs, targets)]
            samples = [[resize(s, target) for s in image_samples] for image_samples, target in zip(samples, targets)]
        return outputs, samples

    def sample_images(self, rgbs: list[Tensor], plan: PassPlan, generator: Generators, progress: bool = True,
                      callback: Callback | None = None) -> list[list[Tensor]]:
        """Each image's K samples for one pass; on out of memory, smaller tiles, then one by one."""
        k = plan.num_samples
        results: list[list[Tensor]] = [[] for _ in rgbs]
        by_size: dict[tuple[int, int], list[int]] = {}
        for index, rgb in enumerate(rgbs):
            by_size.setdefault(spatial_size(rgb), []).append(index)
        for indices in by_size.values():
            units = [(i, j) for i in indices for j in range(k)]  # (image, sample), batched together
            for start in range(0, len(units), plan.batch_size):
                chunk = units[start : start + plan.batch_size]
                orientations = flip_orientations(plan.recipe.ensemble, [j for _, j in chunk])
                lowres = flip_each(torch.cat([rgbs[i] for i, _ in chunk]), orientations)
                gens = [generator[i * k + j] for i, j in chunk] if isinstance(generator, list) else generator
                scale = self.config.scale
                tiling = plan.tiling((lowres.shape[-2] * scale, lowres.shape[-1] * scale))
                with torch.inference_mode():  # out of memory: smaller tiles, then one by one
                    out = run_with_fallback(
                        lambda lr, gen, tile, batch: self.sample(lr, plan.retiled(tile, batch), gen, progress, callback),
                        lowres, gens, tiling=tiling, batch_size=plan.tile_batch_size, config=self.config,
                        device=self.device).cpu()
                out = flip_each(out, orientations)
                for (i, _), result in zip(chunk, out):
                    results[i].append(result[None])
        return results

    def sampling_recipe(self, recipe: Recipe | None = None, preset: str | None = None,
                        **settings: Any) -> Recipe:
        """The recipe a call runs (`recipe`, `preset`'s or the default), `settings` overriding."""
        if recipe is not None and preset is not None:
            raise ValueError("Pass either recipe or preset, not both.")
        return self.config.recipe(preset, **settings) if recipe is None else recipe.override(**settings)


def _collect_output(items: Sequence[Any], counts: list[int], flat: list[imageio.Prepared], merged: list[Tensor],
                    samples: list[list[Tensor]], config: ModelConfig, *, output_type: str | None, single: bool,
                    details: bool, report: bool) -> Any:
    """The results in the caller's kind, grouped like `items`; with `details` an `UpscaleOutput`."""
    images = to_caller_kind(merged, flat, output_type)
    grouped = group_like(items, counts, images, "images", single)
    if not details:
        return grouped
    k = len(samples[0]) if samples else 1
    output = UpscaleOutput(images=grouped)
    maps = None
    if k > 1:
        maps = [sample_spread(torch.cat(image_samples), prep.gray) for image_samples, prep in zip(samples, flat)]
        output.uncertainty = group_like(items, counts, maps, "uncertainty", single)
        per_sample = [to_caller_kind(image_samples, [prep] * k, output_type) for image_samples, prep in zip(samples, flat)]
    else:  # the one sample is the result
        per_sample = [[image] for image in images]
    output.samples = group_like(items, counts, per_sample, "samples", single)
    errors = [consistency_error(result, prep.rgb) for result, prep in zip(merged, flat)]
    output.consistency = group_like(items, counts, errors, "consistency", single)
    if report:
        reports = image_reports(merged, [p.rgb for p in flat], maps, k, config, errors)
        output.report = group_like(items, counts, reports, "report", single)
    return output


def _unet_pixels(run: RunEstimate) -> int:
    """U-Net input pixels of one step of `run` (every tile, or every whole image)."""
    height, width = run.size
    if run.tile is None:
        return run.batch * height * width
    return run.batch * run.tiles_per_image * min(run.tile, height) * min(run.tile, width)


def _check_max_output_pixels(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"max_output_pixels must be a positive number of pixels or None (no limit), got {value!r} "
                        f"({type(value).__name__}).")
    if not math.isfinite(value) or value < 1:
        raise ValueError(f"max_output_pixels must be a finite number of pixels >= 1, or None (no limit), got {value!r}.")
    return int(cast(float, value))


def _check_generator(generator: Any) -> None:
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
    """Pop the deprecated `return_uncertainty` / `return_samples`: the fields they ask for."""
    unknown = sorted(set(arguments) - set(_LEGACY_RETURNS) - sampler_option_names())
    if unknown:
        raise TypeError(f"upscale() got an unexpected keyword argument {unknown[0]!r}")
    fields = []
    for name, field_name in _LEGACY_RETURNS.items():
        if name in arguments:
            deprecate(f"upscale({name}=...)", "0.3.0",
                      f"Use upscale(return_dict=True) and read the output's .{field_name}.", stacklevel=4)
            if arguments.pop(name):
                fields.append(field_name)
    return fields
