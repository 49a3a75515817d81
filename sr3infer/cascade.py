"""`Cascade`: SR3 upscalers run in order, each stage's output the next one's input."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence, Union, cast

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from . import seeding
from .images import io as imageio
from .images.io import ValueRange
from .images.resample import spatial_size
from .models.config import UNSET, Recipe
from .outputs import stack_if_same, to_caller_kind
from .plan import Generators, PassPlan
from .sampling.samplers import Callback, randn, sampler_option_names
from .size_guard import DEFAULT_MAX_OUTPUT_PIXELS
from .upscaler import Upscaler

__all__ = ["Cascade"]

Images = Union[Sequence[Image.Image], Image.Image, np.ndarray, Tensor]
BaseGenerator = Callable[[int], Any]


class Cascade:
    """Upscalers run one after another, e.g. a base generator's 64x64 samples -> 256 -> 1024.

    Each stage can noise its input first (conditioning augmentation, as in SR3 and Imagen), so the
    previous stage's artefacts are not amplified as detail. See docs/cascades.md.

    Args:
        upscalers: the stages, first to last.
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
        """Load each stage with `Upscaler.from_pretrained(name, **kwargs)`."""
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
        """The seed of `stage` (0-based) in a run with `seed`, so
        `Cascade([upscalers[s]]).run(inputs, seed=Cascade.stage_seed(seed, s))` reruns a stage;
        image k of the stage adds k."""
        return seeding.sample_seed(int(seed), 0, stage=stage)

    def run(
        self,
        images: Images | BaseGenerator,
        *,
        count: int | None = None,
        num_steps: int | None | Sequence[int | None] = None,
        sampler: str | None | Sequence[str | None] = None,
        spacing: str | None | Sequence[str | None] = None,
        start_noise_level: float | None | Sequence[float | None] = UNSET,
        consistency: str | None | Sequence[str | None] = None,
        ensemble: str | None | Sequence[str | None] = None,
        preset: str | None | Sequence[str | None] = None,
        recipe: Recipe | None | Sequence[Recipe | None] = None,
        num_samples: int | None | Sequence[int | None] = None,
        noise_level: float | Sequence[float] = 0.0,
        seed: int | None = None,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        value_range: ValueRange = "auto",
        batch_size: int = 8,
        tile_size: int | None = None,
        tile_overlap: int | None = None,
        progress: bool = True,
        callback: Callback | None = None,
        output_type: str | None = None,
        return_all_stages: bool = False,
        max_output_pixels: int | None = DEFAULT_MAX_OUTPUT_PIXELS,
        **sampler_options: Any,
    ) -> Any:
        """Upscale a base generator's samples through every stage, one planned pass per stage.

        Args:
            images: what `Upscaler.upscale` takes, or a callable `base(count)` returning it (a
                diffusers pipeline output is unwrapped).
            count: how many images to ask a callable `images` for.
            num_steps, sampler, spacing, start_noise_level, consistency, ensemble: each stage's recipe (see
                `Upscaler.upscale`), one value for all stages or one per stage.
            preset, recipe, num_samples: the same, one value for all stages or one per stage.
            sampler_options: the samplers' own options (e.g. eta), one value or one per stage.
            noise_level: per stage, the std of the noise added to its input (in [-1, 1] units).
            seed: stage s draws from `seed + s * seeding.STAGE_STRIDE`, plus k*K + j for sample j of
                image k (the augmentation noise first).
            generator: one per image (used by every stage) or one for all, instead of `seed`.
            value_range: of float inputs: (0, 1), (-1, 1) or "auto" (default).
            batch_size, tile_size, tile_overlap, progress, callback, max_output_pixels: as in
                `Upscaler.upscale`, for every stage.
            output_type: "pil", "np" or "pt"; default the kind of the input.
            return_all_stages: return every stage's outputs, the last being the final images.
        """
        stages = len(self.upscalers)
        # 1. every stage's recipe and noise level, checked before anything runs
        unknown = sorted(set(sampler_options) - sampler_option_names())
        if unknown:
            raise TypeError(f"run() got an unexpected keyword argument {unknown[0]!r}")
        parts = {"num_steps": num_steps, "sampler": sampler, "spacing": spacing, "start_noise_level": start_noise_level,
                 "consistency": consistency, "ensemble": ensemble, "num_samples": num_samples, **sampler_options}
        per_stage = {name: _per_stage(value, name, stages) for name, value in parts.items()}
        presets, given = _per_stage(preset, "preset", stages), _per_stage(recipe, "recipe", stages)
        recipes = [up.sampling_recipe(given[s], presets[s], **{name: values[s] for name, values in per_stage.items()})
                   for s, up in enumerate(self.upscalers)]
        levels = _noise_levels(noise_level, stages)
        if output_type not in (None, "pil", "np", "pt"):
            raise ValueError(f"Unknown output_type {output_type!r}; expected 'pil', 'np' or 'pt'.")
        seed = seeding.check_seed(seed)
        if seed is not None and generator is not None:
            raise ValueError("Pass either generator or seed, not both.")
        # 2. the images
        items, kind = _items(_call_base(images, count))
        # 3. every stage's plan, from the sizes alone
        sizes = [size for item in items for size in imageio.peek_sizes(item)]
        generators = _per_image_generators(generator, len(sizes))
        plans = []
        for s, upscaler in enumerate(self.upscalers):
            plans.append(upscaler.plan(sizes, recipes[s], batch_size=batch_size, tile_size=tile_size, tile_overlap=tile_overlap,
                                       max_output_pixels=max_output_pixels, seed=seed, stage=s).passes[0])
            sizes = [(h * upscaler.config.scale, w * upscaler.config.scale) for h, w in sizes]
        # 4. the stages in order
        prepared = [prep for item in items for prep in imageio.prepare(item, value_range)]
        current = [prep.rgb for prep in prepared]
        outputs: list[list[Tensor]] = []
        for s, (upscaler, plan) in enumerate(zip(self.upscalers, plans)):
            current = _run_stage(upscaler, plan, current, levels[s], generators, progress, callback)
            if return_all_stages or s == stages - 1:
                outputs.append(current)
        # 5. the caller's kind: gray, alpha and 16-bit are kept (`outputs.to_caller_kind`)
        results = [stack_if_same(to_caller_kind(stage, prepared, output_type or kind)) for stage in outputs]
        return results if return_all_stages else results[-1]

    __call__ = run


def _run_stage(upscaler: Upscaler, plan: PassPlan, images: list[Tensor], noise_level: float, generator: Generators,
               progress: bool, callback: Callback | None) -> list[Tensor]:
    """One stage: conditioning augmentation, then each image's K samples, averaged."""
    k = plan.num_samples
    if plan.seed is not None:
        generators = plan.sample_generators(len(images))
    elif isinstance(generator, list):  # one per image: draws all its samples
        generators = [g for g in generator for _ in range(k)]
    else:
        generators = generator
    if noise_level > 0:
        images = [(image + noise_level * randn(image.shape, generator=cast(Any, [generators[i * k]] if isinstance(
                       generators, list) else generators), device="cpu")).clamp(-1, 1) for i, image in enumerate(images)]
    plan.warn_if_off_size([spatial_size(image) for image in images], stacklevel=5)
    samples = upscaler.sample_images(images, plan, generators, progress, callback)
    return [plan.merge(image_samples, image) for image_samples, image in zip(samples, images)]


def _noise_levels(noise_level: float | Sequence[float], stages: int) -> list[float]:
    levels = _per_stage(noise_level, "noise_level", stages)
    for s, level in enumerate(levels):
        if isinstance(level, bool) or not isinstance(level, (int, float)) or not math.isfinite(level) or level < 0:
            raise ValueError(f"noise_level for stage {s} must be a finite number >= 0, got {level!r}.")
    return levels


def _call_base(images: Any, count: int | None) -> Any:
    if not callable(images):
        if count is not None:
            raise ValueError("count= is for a callable base generator; with images, leave it out.")
        return images
    if not isinstance(count, int) or count < 1:
        raise ValueError(f"With a base generator callable, pass count= (a positive integer), got {count!r}.")
    images = images(count)
    if hasattr(images, "images") and not isinstance(images, (np.ndarray, Tensor)):
        images = images.images  # a diffusers ImagePipelineOutput
    return images


def _per_image_generators(generator: Any, count: int) -> Generators:
    if not isinstance(generator, (list, tuple)):
        return generator
    if len(generator) != count:
        raise ValueError(f"Got {len(generator)} generators for {count} images; pass one per image or a single one.")
    return list(generator)


def _per_stage(value: Any, name: str, stages: int) -> list[Any]:
    if isinstance(value, (list, tuple)):
        if len(value) != stages:
            raise ValueError(
                f"{name} has {len(value)} values for {stages} stages; give one value for all stages or one per stage."
            )
        return list(value)
    return [value] * stages


def _items(images: Any) -> tuple[list[Any], str]:
    """A base generator's output as a list of inputs and its kind ("pil", "np" or "pt")."""
    if isinstance(images, (Image.Image, np.ndarray, Tensor)):
        items = [images]
    elif isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("Got an empty list of images; the base generator produced nothing.")
        for item in images:
            if not isinstance(item, (Image.Image, np.ndarray, Tensor)):
                raise TypeError(f"Expected PIL images in the list, got {type(item).__name__}.")
        items = list(images)
    else:
        raise TypeError(
            "Expected a list of PIL images, a numpy batch (N, H, W, C), a tensor batch (N, C, H, W) or a callable "
            f"base generator, got {type(images).__name__}."
        )
    kind = "pil" if isinstance(items[0], Image.Image) else ("np" if isinstance(items[0], np.ndarray) else "pt")
    return items, kind
