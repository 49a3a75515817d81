"""Ray Data: upscale a dataset's image column on a pool of actors, one `Upscaler` per actor.

`ds.map_batches(Upscale, fn_constructor_kwargs={"model": ..., "seed": 0}, ...)`
(docs/many-machines.md): file k of a folder's sorted images gets seed `seed + k` whatever actor or
batch it lands in, as in the CLI. Ray is not imported: `Upscale` is a callable on dicts of arrays.
"""

from __future__ import annotations

import inspect
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence, cast

import numpy as np
import torch

from .. import seeding
from ..batch import collect_inputs
from ..outputs import stack_if_same
from ..upscaler import Upscaler

__all__ = ["Upscale"]

# `upscale` arguments that `Upscale` sets itself: the images, their randomness, the kind of result.
_RESERVED = ("images", "generator", "seed", "return_dict", "return_report", "output_type", "preset")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _key(path: str | os.PathLike) -> str:
    """A path as both Ray's path column and a caller spell it: absolute, without a URI scheme."""
    return os.path.abspath(_SCHEME.sub("", os.fspath(path)))


class Upscale:
    """A callable class for `Dataset.map_batches`: each actor loads the model once, then upscales.

    Args:
        model: a model name, folder or file, as for `Upscaler.from_pretrained`.
        preset: the model's named recipe ("fidelity", "realism"); None: its default recipe.
        seed: the run's seed, as the CLI's `--seed`: file k of the sorted inputs gets `seed + k`.
        device, torch_dtype: as for `Upscaler.from_pretrained`.
        column: the image column of uint8 (H, W[, C]) arrays, replaced by the upscaled arrays.
        path_column: each row's file (`read_images(..., include_paths=True)`), which numbers it.
        inputs: what numbers the files: None (each file's folder, listed as the CLI does), a folder,
            or a sequence of paths (needed for object storage).
        upscale_kwargs: the rest of `Upscaler.upscale` (`progress` defaults to False).

    Raises:
        ValueError: a seed outside 0 .. 2**64 - 1, or an unknown preset.
        TypeError: an argument `upscale` does not take, or one that `Upscale` sets itself.
    """

    def __init__(self, model: str | os.PathLike = "sr3-64-256", *, preset: str | None = None, seed: int = 0,
                 device: str | torch.device | None = None, torch_dtype: torch.dtype | str | None = None,
                 column: str = "image", path_column: str = "path",
                 inputs: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
                 **upscale_kwargs: Any) -> None:
        taken = set(inspect.signature(Upscaler.upscale).parameters) - {"self"}
        wrong = sorted(set(upscale_kwargs) - (taken - set(_RESERVED)))
        if wrong:
            why = ["set by Upscale" if name in taken else "not an Upscaler.upscale argument" for name in wrong]
            raise TypeError("Upscale: " + "; ".join(f"{name!r} is {w}" for name, w in zip(wrong, why)))
        if seed is None:  # every file needs its own seed, derived from this one
            raise ValueError("seed must be an integer from 0 to 2**64 - 1, got None (the CLI's default is 0)")
        # cast: check_seed returns None only for None, refused above
        self.seed, self.column, self.path_column = cast(int, seeding.check_seed(seed)), column, path_column
        # from_pretrained takes any PathLike but is annotated str | Path; TEMPORARY until
        # upscaler.py widens that annotation (warn_unused_ignores then flags this line)
        self.upscaler = Upscaler.from_pretrained(model, device=device, torch_dtype=torch_dtype)  # type: ignore[arg-type]
        self.options = {"progress": False, **upscale_kwargs, "preset": preset}
        samples = upscale_kwargs.get("num_samples")  # None: the recipe's, as run_jobs resolves it
        self.num_samples = int(samples) if samples is not None else self.upscaler.sampling_recipe(
            upscale_kwargs.get("recipe"), preset).num_samples
        self._numbers: dict[str, int] | None = None if inputs is None else _number(inputs)
        self._folders: dict[str, dict[str, int]] = {}  # folder -> {file name: k}

    def index(self, path: str | os.PathLike) -> int:
        """The number k of a row's file (its seed is `seed + k*K`)."""
        key = _key(path)
        if self._numbers is not None:
            if key not in self._numbers:
                raise ValueError(f"Upscale: {os.fspath(path)!r} is not one of the {len(self._numbers)} `inputs`, "
                                 "so it has no number (seed); pass the list that numbers every file")
            return self._numbers[key]
        folder, name = os.path.split(key)
        if folder not in self._folders:
            try:
                self._folders[folder] = {p.name: k for k, p in enumerate(collect_inputs(folder))}
            except (OSError, ValueError) as err:
                raise ValueError(f"Upscale: cannot list {folder!r} to number {os.fspath(path)!r} as the CLI does "
                                 f"({err}); pass inputs=[...], the paths in the order that numbers them") from None
        if name not in self._folders[folder]:
            raise ValueError(f"Upscale: {os.fspath(path)!r} is not an image the CLI reads in {folder!r} (by suffix); "
                             "pass inputs=[...] to number it")
        return self._folders[folder][name]

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """Upscale `batch[column]` (arrays of any sizes); other columns pass through."""
        if self.column not in batch:
            raise KeyError(f"Upscale: the batch has no column {self.column!r} (it has {sorted(batch)}); "
                           "pass column=...")
        if self.path_column not in batch:
            raise KeyError(f"Upscale: the batch has no column {self.path_column!r}, which numbers each file for its "
                           "seed; read with ray.data.read_images(..., include_paths=True) or pass path_column=...")
        images = [np.asarray(image) for image in batch[self.column]]
        result = dict(batch)
        if not images:
            return result
        indices = [self.index(str(path)) for path in batch[self.path_column]]
        seeding.check_room(self.seed, max(indices) + 1, num_samples=self.num_samples)
        # The folder runner's draw (batch.run_jobs): file k's K generators, whatever its batch.
        generators = [g for k in indices
                      for g in seeding.generators(self.seed, 1, num_samples=self.num_samples, first=k)]
        out = self.upscaler.upscale(images, generator=generators, **self.options)
        result[self.column] = _column(out)
        return result

    def __repr__(self) -> str:
        return f"Upscale({self.upscaler!r}, seed={self.seed}, column={self.column!r})"


def _number(inputs: str | os.PathLike | Sequence[str | os.PathLike]) -> dict[str, int]:
    """{path key: k} for a folder or file (numbered as the CLI does), or a sequence of paths."""
    if isinstance(inputs, (str, os.PathLike)):
        paths: Sequence[str | os.PathLike] = collect_inputs(Path(_SCHEME.sub("", os.fspath(inputs))))
    else:
        paths = list(inputs)
    numbers: dict[str, int] = {}
    for k, path in enumerate(paths):
        numbers.setdefault(_key(path), k)
    if len(numbers) != len(paths):
        raise ValueError("Upscale: `inputs` names a file twice; each file needs one number (seed)")
    return numbers


def _column(images: list[np.ndarray]) -> np.ndarray:
    """One (N, H, W[, C]) array when all shapes agree, else an object array (a ragged column)."""
    stacked = stack_if_same(images)
    if isinstance(stacked, np.ndarray):
        return stacked
    column = np.empty(len(images), dtype=object)
    for k, image in enumerate(images):  # numpy would broadcast close shapes
        column[k] = image
    return column
