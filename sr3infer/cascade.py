"""`Cascade`: SR3 upscalers run in order, each stage's output the next one's input (SR3 cascaded generation)."""

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
from .sampling.samplers import Callback, randn
from .sampling.uncertainty import ensemble_mean
from .size_guard import DEFAULT_MAX_OUTPUT_PIXELS
from .upscaler import Upscaler

__all__ = ["Cascade"]

Images = Union[Sequence[Image.Image], Image.Image, np.ndarray, Tensor]
BaseGenerator = Callable[[int], Any]


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
        eta: float | None | Sequence[float | None] = None,
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
    ) -> Any:
        """Upscale a base generator's samples through every stage; each stage is one `Upscaler.upscale` call.

        Args:
            images: the base generator's output, in any form `Upscaler.upscale` takes: a list of PIL images,
                a numpy batch (N, H, W, C) (uint8, uint16 or float), a tensor batch (N, C, H, W)
                (float or uint8), or one image of these kinds; or a callable `base(count)` that
                returns one of these (e.g. `lambda n: pipe(batch_size=n).images` for diffusers).
            count: how many images to ask a callable `images` for; required with a callable.
            num_steps, sampler, spacing, start_noise_level, consistency, eta, preset: the sampling recipe
                (see `Upscaler.upscale`) per stage: one value for all stages or a sequence with one per
                stage; left out, the stage model's default.
            recipe: a whole recipe (`Recipe`) instead of `preset`, one or one per stage; the
                arguments above override parts of it.
            num_samples: per stage, K samples averaged into the stage's output (as `Upscaler.upscale`);
                None: the stage recipe's (1 unless its preset carries more).
            noise_level: conditioning augmentation per stage (one value or one per stage): the std of
                Gaussian noise added to the stage's low-res input, in [-1, 1] units, before it is
                upscaled (then clamped to [-1, 1]). 0 (default) adds none. Models trained without
                augmentation keep part of that noise, so use small levels (about 0.01-0.05).
            seed: stage s uses `stage_seed(seed, s) = seed + s * 1_000_000`, image k of it that plus k,
                for both its augmentation noise and its sampling noise; a batch and the same images one
                at a time (image k with seed + k) give the same results. None: `generator`, else torch's
                global RNG. A stage whose recipe averages K samples (`num_samples`) gives image k the seeds
                `stage_seed + k*K` (augmentation and sample 0) to `stage_seed + k*K + K-1`.
            generator: instead of `seed`, one generator per image (each used by every stage in turn, for all
                of its samples) or a single one that draws all the noise in turn.
            value_range: for float inputs: (0, 1), (-1, 1), or "auto" (default), which reads the
                batch as [-1, 1] if its minimum is below 0 and as [0, 1] otherwise. A [-1, 1] batch
                with no negative value (a very bright one) is then misread: pass the range to be sure.
                Integer inputs are always 0..255 (uint8) or 0..65535 (uint16).
            batch_size: images per U-Net call, and tiles per U-Net call when a stage tiles.
            tile_size, tile_overlap: output-pixel tiling for every stage (see `Upscaler.tile_plan`):
                default tiles of the trained size when a stage's output is larger; 0 turns it off.
            progress: tqdm bars over the denoising steps.
            callback: called after every denoising step of every stage (see `Upscaler.upscale`).
            output_type: "pil" (a list of images), "np" ((N, H, W, C) arrays) or "pt" ((N, C, H, W)
                tensors); default the kind of the input. Each image comes back as `Upscaler.upscale` gives it
                (`imageio.restore`): gray stays gray, alpha is kept, 16-bit stays 16-bit, uint8 stays uint8.
                Images of different sizes or dtypes come back as a list.
            return_all_stages: also return every stage's outputs.
            max_output_pixels: each stage refuses outputs larger than this, or batches that would need
                too much memory (see `Upscaler.upscale`); None switches the check off.

        Returns:
            The final images; with `return_all_stages`, a list with one entry per stage (each in
            `output_type`), the last being the final images.

        Raises:
            ValueError: per-stage lists of the wrong length, bad noise levels or recipes, values outside
                the value range, NaN/Inf, or a callable without `count`.
            TypeError: an input that is not an image batch of a supported kind.
        """
        stages = len(self.upscalers)
        settings = {"num_steps": num_steps, "sampler": sampler, "spacing": spacing,
                    "start_noise_level": start_noise_level, "consistency": consistency, "eta": eta,
                    "num_samples": num_samples}
        per_stage = {name: _per_stage(value, name, stages) for name, value in settings.items()}
        presets, given = _per_stage(preset, "preset", stages), _per_stage(recipe, "recipe", stages)
        # Every stage's recipe is resolved and checked now, not after the earlier stages have run.
        recipes = [up.sampling_recipe(given[s], presets[s], **{name: values[s] for name, values in per_stage.items()})
                   for s, up in enumerate(self.upscalers)]
        levels = _per_stage(noise_level, "noise_level", stages)
        for s, level in enumerate(levels):
            if isinstance(level, bool) or not isinstance(level, (int, float)) or not math.isfinite(level) or level < 0:
                raise ValueError(f"noise_level for stage {s} must be a finite number >= 0, got {level!r}.")
        if output_type not in (None, "pil", "np", "pt"):
            raise ValueError(f"Unknown output_type {output_type!r}; expected 'pil', 'np' or 'pt'.")
        seed = seeding.check_seed(seed)
        if seed is not None and generator is not None:
            raise ValueError("Pass either generator or seed, not both.")
        if callable(images):
            if not isinstance(count, int) or count < 1:
                raise ValueError(f"With a base generator callable, pass count= (a positive integer), got {count!r}.")
            images = images(count)
            if hasattr(images, "images") and not isinstance(images, (np.ndarray, Tensor)):
                images = images.images  # a diffusers ImagePipelineOutput
        elif count is not None:
            raise ValueError("count= is for a callable base generator; with images, leave it out.")
        items, kind = _items(images)
        # Every stage's recipe, tiling and size checks are resolved now, from the sizes alone, before any stage runs.
        sizes = [size for item in items for size in imageio.peek_sizes(item)]
        calls = []
        for s, upscaler in enumerate(self.upscalers):
            calls.append(upscaler._plan_call(sizes, recipes[s], batch_size=batch_size, tile_size=tile_size,
                                             tile_overlap=tile_overlap, max_output_pixels=max_output_pixels,
                                             num_samples=recipes[s].num_samples))
            sizes = [(h * upscaler.config.scale, w * upscaler.config.scale) for h, w in sizes]
        prepared = [prep for item in items for prep in imageio.prepare(item, value_range)]
        current = [prep.rgb for prep in prepared]
        seeding.check_room(seed, len(current), num_samples=max(r.num_samples for r in recipes), stages=stages)
        if isinstance(generator, (list, tuple)):
            generator = list(generator)
            if len(generator) != len(current):
                raise ValueError(f"Got {len(generator)} generators for {len(current)} images; pass one per image or "
                                 "a single one.")

        outputs: list[list[Tensor]] = []
        for s, upscaler in enumerate(self.upscalers):
            k_samples = recipes[s].num_samples  # a recipe measured best as a K-sample mean: image k's K samples
            generators = (generator if seed is None
                          else [torch.Generator("cpu").manual_seed(
                                    seeding.sample_seed(seed, k, num_samples=k_samples, stage=s)) for k in range(len(current))])
            if levels[s] > 0:  # conditioning augmentation, drawn first from each image's own generator
                own = (lambda k: [generators[k]]) if isinstance(generators, list) else (lambda k: generators)
                current = [(image + levels[s] * randn(image.shape, generator=cast(Any, own(k)), device="cpu")).clamp(-1, 1)
                           for k, image in enumerate(current)]
            upscaler._warn_if_off_size([spatial_size(image) for image in current], calls[s])
            per_image = None  # sample 0 of image k continues its generator; sample j > 0: seed + k*K + j (or the same)
            if isinstance(generators, list):
                per_image = [gen if j == 0 or seed is None
                             else torch.Generator("cpu").manual_seed(
                                 seeding.sample_seed(seed, k, sample=j, num_samples=k_samples, stage=s))
                             for k, gen in enumerate(generators) for j in range(k_samples)]
            results = upscaler._sample_images(current, calls[s], per_image, generators, progress, callback)
            current = [samples[0] if k_samples == 1 else ensemble_mean(torch.cat(samples), image, recipes[s].consistency)
                       for samples, image in zip(results, current)]
            if return_all_stages or s == stages - 1:
                outputs.append(current)
        # The one output converter (`imageio.restore` through `outputs.to_caller_kind`): kind, mode, bit depth and alpha
        # of each input, so 16-bit inputs give 16-bit outputs through every stage.
        results = [stack_if_same(to_caller_kind(stage, prepared, output_type or kind)) for stage in outputs]
        return results if return_all_stages else results[-1]

    __call__ = run


def _per_stage(value: Any, name: str, stages: int) -> list[Any]:
    if isinstance(value, (list, tuple)):
        if len(value) != stages:
            raise ValueError(
                f"{name} has {len(value)} values for {stages} stages; give one value for all stages or one per stage."
            )
        return list(value)
    return [value] * stages


def _items(images: Any) -> tuple[list[Any], str]:
    """A base generator's output as a list of inputs `imageio.prepare` takes, and its kind "pil"/"np"/"pt"."""
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
