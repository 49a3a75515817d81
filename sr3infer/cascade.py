"""`Cascade`: SR3 upscalers run in order, each stage's output the next one's input (SR3 cascaded generation)."""

from __future__ import annotations

import math
import numbers
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence, Union

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from . import imageio
from .limits import DEFAULT_MAX_OUTPUT_PIXELS
from .samplers import get_sampler, randn
from .upscaler import Upscaler

__all__ = ["Cascade", "STAGE_SEED_STRIDE"]

STAGE_SEED_STRIDE = 1_000_000
"""Stage s of a run with seed S uses seed S + s * STAGE_SEED_STRIDE (and image k of it that plus k)."""

Images = Union[Sequence[Image.Image], Image.Image, np.ndarray, Tensor]
BaseGenerator = Callable[[int], Any]
ValueRange = Union[str, tuple[float, float]]


class Cascade:
    """Upscalers run one after another: e.g. a base generator's 64x64 samples -> 256 -> 1024.

    Each stage can add Gaussian noise to its low-res input first (conditioning augmentation, as in
    SR3's and Imagen's cascades), so that artefacts of the previous stage are not taken as detail
    and amplified. A stage whose input is larger than its model's trained size runs by tiles.

    Args:
        upscalers: the stages, first to last.

    Example:
        >>> cascade = Cascade.from_pretrained(["sr3-64-256", "sr3-64-256"])   # 64 -> 256 -> 1024
        >>> finals = cascade(samples, num_steps=[50, 20], noise_level=[0.05, 0.02], seed=0)
    """

    def __init__(self, upscalers: Sequence[Upscaler]) -> None:
        if isinstance(upscalers, Upscaler):
            upscalers = [upscalers]
        upscalers = list(upscalers)
        if not upscalers:
            raise ValueError("A Cascade needs at least one Upscaler stage, got none.")
        for s, up in enumerate(upscalers):
            if not isinstance(up, Upscaler):
                raise TypeError(
                    f"Stage {s} is a {type(up).__name__}; expected an Upscaler "
                    "(load one with Upscaler.from_pretrained(name), or use Cascade.from_pretrained(names))."
                )
        self.upscalers = upscalers

    @classmethod
    def from_pretrained(cls, names: Sequence[str | Path], **kwargs: Any) -> Cascade:
        """Load each stage with `Upscaler.from_pretrained(name, **kwargs)` (device, torch_dtype, ...)."""
        if isinstance(names, (str, Path)):
            names = [names]
        return cls([Upscaler.from_pretrained(name, **kwargs) for name in names])

    def __len__(self) -> int:
        return len(self.upscalers)

    def __repr__(self) -> str:
        chain = " -> ".join(repr(up) for up in self.upscalers)
        return f"Cascade({chain})"

    @staticmethod
    def stage_seed(seed: int, stage: int) -> int:
        """The seed of `stage` (0-based) in a run with `seed`; image k of the stage uses this plus k.

        Seeds are additive, so `run([images[k]], seed=seed + k)` reproduces image k of `run(images, seed=seed)`,
        and `Cascade([upscalers[s]]).run(inputs, seed=Cascade.stage_seed(seed, s), ...)` reruns stage s alone.
        """
        return int(seed) + stage * STAGE_SEED_STRIDE

    def run(
        self,
        images: Images | BaseGenerator,
        *,
        count: int | None = None,
        num_steps: int | None | Sequence[int | None] = None,
        sampler: str | None | Sequence[str | None] = None,
        noise_level: float | Sequence[float] = 0.0,
        seed: int | None = None,
        value_range: ValueRange = "auto",
        batch_size: int = 8,
        tile_size: int | None = None,
        tile_overlap: int | None = None,
        progress: bool = True,
        output_type: str | None = None,
        return_all_stages: bool = False,
        max_output_pixels: int | None = DEFAULT_MAX_OUTPUT_PIXELS,
    ) -> Any:
        """Upscale a base generator's samples through every stage.

        Args:
            images: the base generator's output, in any form generators emit: a list of PIL images,
                a numpy batch (N, H, W, C) (uint8, uint16 or float), a tensor batch (N, C, H, W)
                (float or uint8), or one image of these kinds; or a callable `base(count)` that
                returns one of these (e.g. `lambda n: pipe(batch_size=n).images` for diffusers).
            count: how many images to ask a callable `images` for; required with a callable.
            num_steps, sampler: per stage, one value for all stages or a sequence with one per stage;
                None is the stage model's default.
            noise_level: conditioning augmentation per stage (one value or one per stage): the std of
                Gaussian noise added to the stage's low-res input, in [-1, 1] units, before it is
                upscaled (then clamped to [-1, 1]). 0 (default) adds none. Models trained without
                augmentation keep part of that noise, so use small levels (about 0.01-0.05).
            seed: stage s uses `stage_seed(seed, s) = seed + s * 1_000_000`, image k of it that plus k,
                for both its augmentation noise and its sampling noise; a batch and the same images one
                at a time (image k with seed + k) give the same results. None: torch's global RNG.
            value_range: for float inputs: (0, 1), (-1, 1), or "auto" (default), which reads the
                batch as [-1, 1] if its minimum is below 0 and as [0, 1] otherwise. A [-1, 1] batch
                with no negative value (a very bright one) is then misread: pass the range to be sure.
                Integer inputs are always 0..255 (uint8) or 0..65535 (uint16).
            batch_size: images per U-Net call, and tiles per U-Net call when a stage tiles.
            tile_size, tile_overlap: output-pixel tiling for every stage (see `Upscaler.tile_plan`):
                default tiles of the trained size when a stage's output is larger; 0 turns it off.
            progress: tqdm bars over the denoising steps.
            output_type: "pil" (list of RGB images), "np" ((N, H, W, 3) uint8) or "pt"
                ((N, 3, H, W) float32 in [0, 1]); default the kind of the input. Images of different
                sizes come back as a list.
            return_all_stages: also return every stage's outputs.
            max_output_pixels: each stage refuses outputs larger than this, or batches that would need
                too much memory (see `Upscaler.upscale`); None switches the check off.

        Returns:
            The final images; with `return_all_stages`, a list with one entry per stage (each in
            `output_type`), the last being the final images.

        Raises:
            ValueError: per-stage lists of the wrong length, bad noise levels, values outside the
                value range, NaN/Inf, or a callable without `count`.
            TypeError: an input that is not an image batch of a supported kind.
        """
        stages = len(self.upscalers)
        steps_list = _per_stage(num_steps, "num_steps", stages)
        samplers = _per_stage(sampler, "sampler", stages)
        levels = _per_stage(noise_level, "noise_level", stages)
        for name in samplers:
            if name is not None:
                get_sampler(name)  # unknown names fail now, not after the earlier stages have run
        for s, level in enumerate(levels):
            if isinstance(level, bool) or not isinstance(level, (int, float)) or not math.isfinite(level) or level < 0:
                raise ValueError(f"noise_level for stage {s} must be a finite number >= 0, got {level!r}.")
        if output_type not in (None, "pil", "np", "pt"):
            raise ValueError(f"Unknown output_type {output_type!r}; expected 'pil', 'np' or 'pt'.")
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
        batch_size = int(batch_size)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)
                                 or not 0 <= seed < 2**63):  # leaves room for the stage and image offsets
            raise ValueError(f"seed must be an integer from 0 to 2**63 - 1, got {seed!r}.")
        if callable(images):
            if not isinstance(count, int) or count < 1:
                raise ValueError(f"With a base generator callable, pass count= (a positive integer), got {count!r}.")
            images = images(count)
            if hasattr(images, "images") and not isinstance(images, (np.ndarray, Tensor)):
                images = images.images  # a diffusers ImagePipelineOutput
        elif count is not None:
            raise ValueError("count= is for a callable base generator; with images, leave it out.")
        current, kind = to_lowres_batch(images, value_range)
        kind = output_type or kind

        per_stage: list[list[Tensor]] = []
        for s, upscaler in enumerate(self.upscalers):
            stage_seed = None if seed is None else self.stage_seed(seed, s)
            current = self._run_stage(
                upscaler, current, stage_seed, num_steps=steps_list[s], sampler=samplers[s], noise_level=levels[s],
                batch_size=batch_size, tile_size=tile_size, tile_overlap=tile_overlap, progress=progress, stage=s,
                max_output_pixels=max_output_pixels,
            )
            if return_all_stages or s == stages - 1:
                per_stage.append(current)
        outputs = [from_lowres_batch(stage_images, kind) for stage_images in per_stage]
        return outputs if return_all_stages else outputs[-1]

    __call__ = run

    def _run_stage(
        self,
        upscaler: Upscaler,
        images: list[Tensor],
        stage_seed: int | None,
        *,
        num_steps: int | None,
        sampler: str | None,
        noise_level: float,
        batch_size: int,
        tile_size: int | None,
        tile_overlap: int | None,
        progress: bool,
        stage: int,
        max_output_pixels: int | None,
    ) -> list[Tensor]:
        """One stage over all images: same-size images batched, image k seeded with `stage_seed + k`."""
        trained = upscaler.config.lowres_size
        small = sorted({tuple(im.shape[-2:]) for im in images if min(im.shape[-2:]) < trained})
        if small:
            sizes = ", ".join(f"{w}x{h}" for h, w in small)
            warnings.warn(
                f"Cascade stage {stage} was trained on {trained}x{trained} inputs; got {sizes}. "
                "Results are best at (or above, by tiles) the trained size.",
                stacklevel=4,
            )
        results: list[Tensor | None] = [None] * len(images)
        by_size: dict[tuple[int, int], list[int]] = {}
        for k, image in enumerate(images):
            by_size.setdefault(tuple(image.shape[-2:]), []).append(k)
        for indices in by_size.values():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                lowres = torch.cat([images[k] for k in chunk])
                generators = (
                    None if stage_seed is None
                    else [torch.Generator("cpu").manual_seed(stage_seed + k) for k in chunk]
                )
                if noise_level > 0:
                    # Conditioning augmentation, drawn first from each image's own generator.
                    noise = randn(lowres.shape, generator=generators, device="cpu")
                    lowres = (lowres + noise_level * noise).clamp(-1, 1)
                out = upscaler.upscale_tensor(
                    lowres, num_steps=num_steps, sampler=sampler, generator=generators, progress=progress,
                    tile_size=tile_size, tile_overlap=tile_overlap, tile_batch_size=batch_size,
                    max_output_pixels=max_output_pixels,
                ).float().cpu()
                for k, result in zip(chunk, out):
                    results[k] = result[None]
        return [r for r in results if r is not None]


def _per_stage(value: Any, name: str, stages: int) -> list[Any]:
    if isinstance(value, (list, tuple)):
        if len(value) != stages:
            raise ValueError(
                f"{name} has {len(value)} values for {stages} stages; give one value for all stages or one per stage."
            )
        return list(value)
    return [value] * stages


def _resolve_range(data: Tensor, value_range: ValueRange) -> tuple[float, float]:
    if isinstance(value_range, str):
        if value_range != "auto":
            raise ValueError(f"Unknown value_range {value_range!r}; expected 'auto', (0, 1) or (-1, 1).")
        return (-1.0, 1.0) if data.numel() and float(data.min()) < 0 else (0.0, 1.0)
    try:
        low, high = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise ValueError(f"Unknown value_range {value_range!r}; expected 'auto', (0, 1) or (-1, 1).") from None
    if (low, high) not in ((0.0, 1.0), (-1.0, 1.0)):
        raise ValueError(f"Unsupported value_range {value_range!r}; expected 'auto', (0, 1) or (-1, 1).")
    return low, high


def _float_batch_to_unit(data: Tensor, value_range: ValueRange) -> Tensor:
    """(N, C, H, W) float in `value_range` -> [0, 1], checking that the values fit."""
    if not torch.isfinite(data).all():
        raise ValueError("The images contain NaN or Inf values; expected finite values.")
    low, high = _resolve_range(data, value_range)
    if data.numel() and (float(data.min()) < low - 1e-3 or float(data.max()) > high + 1e-3):
        raise ValueError(
            f"Expected float images in [{low:g}, {high:g}], got values in [{float(data.min()):.3g}, "
            f"{float(data.max()):.3g}]. Pass value_range=(-1, 1) or (0, 1) to say which range the generator emits."
        )
    return ((data - low) / (high - low)).clamp(0, 1)


def _unit_to_model(unit: Tensor) -> list[Tensor]:
    """(N, C, H, W) in [0, 1] with C in (1, 3, 4) -> list of (1, 3, H, W) in [-1, 1] (gray expanded, alpha dropped)."""
    if unit.dim() != 4 or unit.shape[1] not in (1, 3, 4):
        raise ValueError(f"Expected images with 1, 3 or 4 channels, got a batch of shape {tuple(unit.shape)}.")
    if min(unit.shape[-2:]) < 1:
        raise ValueError(f"Images must be at least 1x1 pixels, got a batch of shape {tuple(unit.shape)}.")
    rgb = unit[:, :3] if unit.shape[1] != 1 else unit.expand(-1, 3, -1, -1)
    return [image[None].float().contiguous() * 2 - 1 for image in rgb]


def to_lowres_batch(images: Any, value_range: ValueRange = "auto") -> tuple[list[Tensor], str]:
    """A base generator's output -> (list of (1, 3, h, w) float32 in [-1, 1], its kind "pil"/"np"/"pt")."""
    if isinstance(images, Image.Image):
        images = [images]
    if isinstance(images, np.ndarray):
        array = images[None] if images.ndim == 3 else images
        if array.ndim != 4:
            raise ValueError(f"Expected a numpy batch of shape (N, H, W, C), got shape {images.shape}.")
        if array.shape[-1] not in (1, 3, 4) and array.shape[1] in (1, 3, 4):
            raise ValueError(f"Expected channels last (N, H, W, C), got shape {images.shape}; transpose it first.")
        if array.dtype == np.uint8:
            unit = torch.from_numpy(array.astype(np.float32) / 255.0)
        elif array.dtype == np.uint16:
            unit = torch.from_numpy(array.astype(np.float32) / 65535.0)
        elif np.issubdtype(array.dtype, np.floating):
            unit = _float_batch_to_unit(torch.from_numpy(array.astype(np.float32)), value_range)
        else:
            raise ValueError(f"Unsupported numpy dtype {array.dtype}; expected uint8, uint16 or float.")
        return _unit_to_model(unit.permute(0, 3, 1, 2)), "np"
    if isinstance(images, Tensor):
        data = images.detach().cpu()
        data = data[None] if data.dim() == 3 else data
        if data.dim() != 4:
            raise ValueError(f"Expected a tensor batch of shape (N, C, H, W), got shape {tuple(images.shape)}.")
        if data.shape[1] not in (1, 3, 4) and data.shape[-1] in (1, 3, 4):
            raise ValueError(f"Expected channels first (N, C, H, W), got shape {tuple(images.shape)}; permute it first.")
        if data.dtype == torch.uint8:
            unit = data.float() / 255
        elif data.is_floating_point():
            unit = _float_batch_to_unit(data.float(), value_range)
        else:
            raise ValueError(f"Unsupported tensor dtype {data.dtype}; expected a float or uint8 tensor.")
        return _unit_to_model(unit), "pt"
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("Got an empty list of images; the base generator produced nothing.")
        batch: list[Tensor] = []
        for item in images:
            if isinstance(item, (np.ndarray, Tensor)):
                items, _ = to_lowres_batch(item, value_range)
                batch.extend(items)
            elif isinstance(item, Image.Image):
                batch.extend(p.rgb for p in imageio.prepare(item))
            else:
                raise TypeError(f"Expected PIL images in the list, got {type(item).__name__}.")
        return batch, "pil" if isinstance(images[0], Image.Image) else ("np" if isinstance(images[0], np.ndarray) else "pt")
    raise TypeError(
        "Expected a list of PIL images, a numpy batch (N, H, W, C), a tensor batch (N, C, H, W) or a callable "
        f"base generator, got {type(images).__name__}."
    )


def from_lowres_batch(images: list[Tensor], kind: str) -> Any:
    """List of (1, 3, H, W) in [-1, 1] -> "pil" list, "np" (N, H, W, 3) uint8, or "pt" (N, 3, H, W) in [0, 1]."""
    unit = [((image[0].float().clamp(-1, 1) + 1) / 2) for image in images]
    same_size = len({tuple(u.shape) for u in unit}) == 1
    if kind == "pt":
        return torch.stack(unit) if same_size else unit
    arrays = [np.round(u.permute(1, 2, 0).numpy() * 255).astype(np.uint8) for u in unit]
    if kind == "np":
        return np.stack(arrays) if same_size else arrays
    return [Image.fromarray(a) for a in arrays]
