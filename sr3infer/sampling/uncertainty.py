"""Ensembles of SR3 samples: the per-pixel mean (the output) and spread (the uncertainty map)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch import Tensor

from ..runtime.validate import MAX_NUM_SAMPLES
from ..images.resample import project_onto_input

__all__ = ["MAX_NUM_SAMPLES", "HEATMAP_MAX", "check_num_samples", "ensemble_mean", "sample_spread", "heatmap",
           "save_uncertainty"]

HEATMAP_MAX = 0.05
"""Uncertainty (std in [0, 1] pixel units, 0.05 = 13 of 255 levels) shown as the brightest colour of `heatmap`."""

# Matplotlib's "inferno" colour map (CC0) at 9 evenly spaced points, interpolated linearly: dark = certain.
_INFERNO = np.array([
    (0, 0, 4), (33, 12, 74), (87, 16, 110), (138, 34, 106), (188, 55, 84),
    (228, 90, 49), (249, 142, 9), (249, 203, 53), (252, 255, 164),
], dtype=np.float64)


def check_num_samples(num_samples: Any) -> int:
    """`num_samples` as an int in 1..MAX_NUM_SAMPLES."""
    if isinstance(num_samples, (bool, np.bool_)) or not isinstance(num_samples, (int, np.integer)):
        raise ValueError(f"num_samples must be a whole number of samples per image, got {num_samples!r}.")
    if not 1 <= num_samples <= MAX_NUM_SAMPLES:
        raise ValueError(
            f"num_samples must be between 1 and {MAX_NUM_SAMPLES} samples per image, got {num_samples}; "
            "8 to 16 give a usable uncertainty map."
        )
    return int(num_samples)


def ensemble_mean(samples: Tensor, lowres: Tensor, consistency: str) -> Tensor:
    """The per-pixel mean of `samples` (K, 3, H, W), projected onto `lowres` as any output."""
    mean = samples.float().mean(0, keepdim=True)
    if consistency in ("final", "every"):
        return project_onto_input(mean, lowres.to(mean.device, mean.dtype))
    return mean.clamp(-1, 1)


def sample_spread(samples: Tensor, gray: bool = False) -> np.ndarray:
    """Per-pixel std (ddof=1) across `samples` in [-1, 1] as float32 (H, W) in [0, 1] units: of each
    colour channel, averaged; of the gray value for `gray` images."""
    if samples.shape[0] < 2:
        raise ValueError(f"The spread of samples needs at least 2 of them, got {samples.shape[0]}.")
    unit = (samples.double() + 1) / 2
    if gray:
        unit = unit.mean(1, keepdim=True)
    return unit.std(0, correction=1).mean(0).float().cpu().numpy()


def heatmap(uncertainty: np.ndarray, vmax: float = HEATMAP_MAX) -> Image.Image:
    """An RGB picture of an (H, W) uncertainty map: black, orange, pale yellow at `vmax`."""
    t = np.clip(np.nan_to_num(np.asarray(uncertainty, dtype=np.float64)) / vmax, 0, 1) * (len(_INFERNO) - 1)
    low = np.minimum(t.astype(np.int64), len(_INFERNO) - 2)
    frac = (t - low)[..., None]
    rgb = _INFERNO[low] * (1 - frac) + _INFERNO[low + 1] * frac
    return Image.fromarray(np.round(rgb).astype(np.uint8), mode="RGB")


def save_uncertainty(uncertainty: np.ndarray, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write an uncertainty map atomically: `.npy` as float32, an image suffix as a `heatmap`."""
    from ..images import io as imageio

    if Path(path).suffix.lower() != ".npy":
        return imageio.save_image(heatmap(uncertainty), path, overwrite=overwrite)
    array = np.asarray(uncertainty, dtype=np.float32)
    return imageio.write_atomically(path, lambda handle: np.save(handle, array), overwrite=overwrite)
