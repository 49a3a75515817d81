"""`CallPlan`: one call resolved once, from its arguments and the input sizes, before any image is decoded.

`Upscaler.plan` builds it (recipe, noise grid, tiling, size guard, seeds); `Upscaler.upscale`, `upscale_tensor`,
`Cascade.run` and the folder runner run one. A call is one or more passes of a model over its images (more than
one when the output is asked above the model's scale), each a `PassPlan`, then an optional resize (`SizePlan`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import torch
from torch import Tensor

from . import seeding
from .images.outscale import SizePlan
from .models.config import ModelConfig, Recipe
from .sampling.tiling import plan_tiles
from .sampling.uncertainty import ensemble_mean

__all__ = ["PassPlan", "CallPlan", "Generators"]

Generators = torch.Generator | list[torch.Generator] | None
"""One generator for all the noise of a call, one per sample (image-major), or None: torch's global RNG."""


@dataclass
class PassPlan:
    """One pass of a model over images: its recipe and noise grid, batching, tiling, and where its noise comes from.

    Attributes:
        config: the model's config (its scale and trained size decide the tiling).
        recipe: the sampling recipe; `recipe.num_samples` K samples per image, averaged.
        gammas: the noise grid the sampler walks (`NoiseSchedule.inference_grid`).
        batch_size: samples per model run; tile_batch_size: tiles per U-Net call.
        tile_size, tile_overlap: as given (`plan_tiles` resolves them per output size).
        seed / generator: the call's randomness; stage: this pass's index in the seed rule (`sr3infer.seeding`).
    """

    config: ModelConfig
    recipe: Recipe
    gammas: Tensor
    batch_size: int
    tile_size: int | None = None
    tile_overlap: int | None = None
    tile_batch_size: int = 8
    seed: int | None = None
    generator: Generators = None
    stage: int = 0
    _tilings: dict[tuple[int, int], tuple[int, int] | None] = field(default_factory=dict, init=False, repr=False,
                                                                    compare=False)

    @property
    def num_samples(self) -> int:
        return self.recipe.num_samples

    @property
    def num_steps(self) -> int:
        """Network calls per sample and tile: one per step of the grid."""
        return len(self.gammas) - 1

    def tiling(self, output_size: tuple[int, int]) -> tuple[int, int] | None:
        """`(tile, overlap)` for an output of `output_size` (H, W), or None to run it whole; computed once per size."""
        if output_size not in self._tilings:
            self._tilings[output_size] = plan_tiles(self.config.scale, self.config.out_size, output_size,
                                                    self.tile_size, self.tile_overlap)
        return self._tilings[output_size]

    def retiled(self, tile_size: int | None, tile_batch_size: int | None) -> PassPlan:
        """This pass with another tile side (0: untiled) and tiles per U-Net call; None, None: itself."""
        if tile_size is None:
            return self
        overlap = self.tile_overlap if self.tile_overlap is not None and self.tile_overlap < tile_size else None
        return replace(self, tile_size=tile_size, tile_overlap=overlap,
                       tile_batch_size=self.tile_batch_size if tile_batch_size is None else tile_batch_size)

    def sample_generators(self, images: int) -> Generators:
        """Where the noise of `images` images comes from: per-sample generators by the seed rule with a seed,
        the caller's list (one per sample, checked), else the caller's single generator or None."""
        k = self.num_samples
        if self.seed is not None:
            return seeding.generators(self.seed, images, num_samples=k, stage=self.stage)
        if isinstance(self.generator, (list, tuple)):
            if len(self.generator) != images * k:
                per = f"{images} images" + (f" x {k} samples" if k > 1 else "")
                wanted = f"one per sample ({images * k}, image-major)" if k > 1 else "one per image"
                raise ValueError(f"Got {len(self.generator)} generators for {per}; pass {wanted} or a single one.")
            return list(self.generator)
        return self.generator

    def merge(self, samples: Sequence[Tensor], lowres: Tensor) -> Tensor:
        """An image's output from its K samples (1, 3, H, W): the sample itself, or their projected mean."""
        if len(samples) == 1:
            return samples[0]
        return ensemble_mean(torch.cat(list(samples)), lowres, self.recipe.consistency)

    def warn_if_off_size(self, sizes: Sequence[tuple[int, int]], stacklevel: int = 3) -> None:
        """Warn about inputs (h, w) that reach the model whole at another size than it was trained on."""
        trained, scale = self.config.lowres_size, self.config.scale
        odd = {size for size in sizes if size != (trained, trained)
               and (min(size) < trained or self.tiling((size[0] * scale, size[1] * scale)) is None)}
        if odd:
            shown = ", ".join(f"{w}x{h}" for h, w in sorted(odd))
            warnings.warn(f"This model was trained on {trained}x{trained} inputs; got {shown}. The output is "
                          f"{scale}x larger, but results are best at the trained size.", stacklevel=stacklevel)


@dataclass
class CallPlan:
    """A whole call: its passes (the model over the inputs, then over its own output), then a resize to `size`.

    Attributes:
        passes: one `PassPlan` per pass, first to last (one unless the target is above the model's scale).
        size: the resize to the asked output size, or None: the model's own scale.
        input_sizes: the (h, w) of every input image, in order.
        network_calls: U-Net calls the whole call makes (steps x tiles x samples, every pass), from sizes alone.
        estimate: the size guard's `RunEstimate` of the first pass's largest input.
    """

    passes: list[PassPlan]
    size: SizePlan | None
    input_sizes: list[tuple[int, int]]
    network_calls: int = 0
    estimate: Any = None

    @property
    def recipe(self) -> Recipe:
        return self.passes[0].recipe

    @property
    def num_samples(self) -> int:
        return self.passes[0].num_samples
