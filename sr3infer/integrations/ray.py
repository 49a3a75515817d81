"""Ray Data: upscale a dataset's image column on a pool of actors, one `Upscaler` loaded per actor.

    import ray
    from sr3infer.integrations.ray import Upscale

    ds = ray.data.read_images("photos/", include_paths=True)
    ds = ds.map_batches(Upscale, fn_constructor_kwargs={"model": "sr3-64-256", "seed": 0},
                        batch_size=4, concurrency=2, num_gpus=1)   # num_gpus=0 (and num_cpus=...) on CPUs
    ds.write_images("big/", column="image")

Each output equals the CLI's (`sr3infer photos/ -o big/ --seed 0`) for the same model and recipe, to float
rounding: file k of its folder's sorted images (`sr3infer.batch.collect_inputs`) gets the seed `seed + k` (with
`num_samples` K, sample j: `seed + k*K + j`), whatever actor, batch or order it comes in. So an actor needs the
folder (a local or shared file system) to count k; for files it cannot list (object storage), pass `inputs`, the
full list of paths in the order that numbers them. Ray itself is not imported here: `Upscale` is a plain callable
on dicts of numpy arrays, and `ray` is needed only to run it (`pip install "sr3infer[ray]"`).

Unlike the CLI, Ray's `read_images` decodes the pixels as stored (no EXIF orientation, 8 bits per channel), and
`write_images` writes neither the input's metadata nor its file name; a bad file fails its whole batch, and by
default the run (Ray's `DataContext.max_errored_blocks`), where the CLI fails that one file and goes on.
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

# `upscale` arguments that `Upscale` sets itself: the images, their randomness and the kind of result.
_RESERVED = ("images", "generator", "seed", "return_dict", "return_report", "output_type", "preset")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _key(path: str | os.PathLike) -> str:
    """A path as both Ray's path column and a caller spell it: no URI scheme ("local://", "s3://"), absolute."""
    return os.path.abspath(_SCHEME.sub("", os.fspath(path)))


class Upscale:
    """A callable class for `Dataset.map_batches`: each actor loads the model once, then upscales batches.

    Args:
        model: a model name (see `sr3infer models`), folder or file, as for `Upscaler.from_pretrained`.
        preset: the model's named recipe ("fidelity", "realism"); None: its default recipe.
        seed: the run's seed, as the CLI's `--seed`: file k of the sorted inputs gets `seed + k`.
        device, torch_dtype: as for `Upscaler.from_pretrained` (None: the library's defaults).
        column: the image column, uint8 (H, W[, C]) arrays as `ray.data.read_images` gives them (one batch may
            hold several sizes); replaced by the upscaled arrays, the other columns passed through.
        path_column: each row's file, as `read_images(..., include_paths=True)` gives it; it numbers the file.
        inputs: what numbers the files: None (each file's own folder, listed like the CLI lists it), a folder,
            or a sequence of paths (file k of the sequence gets `seed + k`, as `sr3infer.batch.run_jobs` on
            that list). A row whose file is not among them is an error.
        upscale_kwargs: the rest of `Upscaler.upscale`: num_steps, sampler, num_samples, tile_size, batch_size
            (images per U-Net call), max_output_pixels, outscale, ... (`progress` defaults to False here).

    Raises:
        ValueError: a seed outside 0 .. 2**64 - 1, an unknown preset; TypeError: an argument `upscale` does
            not take, or one that `Upscale` sets itself (generator, seed, output_type, return_dict, return_report).
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
        # from_pretrained takes any PathLike (it calls Path() on it) but is annotated str | Path; TEMPORARY until
        # upscaler.py widens that annotation (warn_unused_ignores then flags this line)
        self.upscaler = Upscaler.from_pretrained(model, device=device, torch_dtype=torch_dtype)  # type: ignore[arg-type]
        self.options = {"progress": False, **upscale_kwargs, "preset": preset}
        samples = upscale_kwargs.get("num_samples")  # None: the recipe's, as run_jobs resolves it
        self.num_samples = int(samples) if samples is not None else self.upscaler.sampling_recipe(
            upscale_kwargs.get("recipe"), preset).num_samples
        self._numbers: dict[str, int] | None = None if inputs is None else _number(inputs)
        self._folders: dict[str, dict[str, int]] = {}  # folder -> {file name: k}, listed once per actor

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
        """Upscale `batch[column]` (arrays of any sizes); every other column is passed through."""
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
        # The folder runner's draw (sr3infer.batch.run_jobs): file k's K generators, whatever batch it is in.
        generators = [g for k in indices
                      for g in seeding.generators(self.seed, 1, num_samples=self.num_samples, first=k)]
        out = self.upscaler.upscale(images, generator=generators, **self.options)
        result[self.column] = _column(out)
        return result

    def __repr__(self) -> str:
        return f"Upscale({self.upscaler!r}, seed={self.seed}, column={self.column!r})"


def _number(inputs: str | os.PathLike | Sequence[str | os.PathLike]) -> dict[str, int]:
    """{path key: k} for a folder or file (numbered like the CLI's), or a sequence of paths (in its order)."""
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
    """One (N, H, W[, C]) array when every image has one shape, else an object array of them (a ragged column)."""
    stacked = stack_if_same(images)
    if isinstance(stacked, np.ndarray):
        return stacked
    column = np.empty(len(images), dtype=object)
    for k, image in enumerate(images):  # one by one: numpy would try to broadcast arrays of close shapes
        column[k] = image
    return column
