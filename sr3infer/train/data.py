"""Training pairs: high-res targets by crop + resize, low-res inputs by the one bicubic resampler."""

from __future__ import annotations

import fnmatch

import math
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from ..images.io import IMAGE_SUFFIXES
from ..images.resample import bicubic, quantize

FACE_BOX = (0, 20, 178, 198)  # CelebA aligned: the 178x178 square around the face


def resolve_data_root(roots: str | Path | Sequence[str | Path]) -> Path:
    """The first of `roots` that is a folder (e.g. `.data/datasets/...`, then `../shared/...`)."""
    candidates = [roots] if isinstance(roots, (str, Path)) else list(roots)
    for root in candidates:
        if Path(root).is_dir():
            return Path(root)
    raise FileNotFoundError(
        f"None of the data folders {[str(r) for r in candidates]} exists (relative paths are from {Path.cwd()}). "
        "Build .data/datasets with `python scripts/prepare_datasets.py` (downloads the pinned public packages), "
        "or run from the repository root of a checkout that has ../shared/datasets next to it."
    )


def list_images(root: str | Path, exclude: Sequence[str] = ()) -> list[Path]:
    """The images of `root`, sorted, without those whose file name matches a glob of `exclude`."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Data folder {root} does not exist; expected a folder of images.")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
                   and not any(fnmatch.fnmatch(p.name, pattern) for pattern in exclude))
    if not files:
        left = f" left by data_exclude {list(exclude)}" if exclude else ""
        raise ValueError(f"No images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {root}{left}.")
    return files


def to_unit_tensor(image: Image.Image) -> Tensor:
    array = np.asarray(image.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1) / 127.5 - 1


def make_lowres(hr: Tensor, scale: int, blur_sigma: Tensor | None = None) -> Tensor:
    """SR3's degradation (optional per-image blur, antialiased bicubic down by `scale`, 8 bits),
    which also makes the evaluation inputs, so train and test match."""
    if blur_sigma is not None:
        hr = gaussian_blur(hr, blur_sigma * scale)
    return quantize(bicubic(hr, (hr.shape[-2] // scale, hr.shape[-1] // scale)))


def gaussian_blur(x: Tensor, sigma: Tensor) -> Tensor:
    """Blur each image of (B, C, H, W) with its own sigma (B,) in pixels (0: unchanged)."""
    radius = max(1, int(math.ceil(3 * float(sigma.max()))))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    sig = sigma.float().clamp_min(1e-6)[:, None]
    kernel = torch.exp(-0.5 * (offsets[None] / sig) ** 2)
    kernel = kernel / kernel.sum(1, keepdim=True)  # (B, K)
    b, c, h, w = x.shape
    mode = "reflect" if radius < min(h, w) else "replicate"
    y = F.pad(x.reshape(1, b * c, h, w), (radius, radius, radius, radius), mode=mode)
    k = kernel.repeat_interleave(c, 0)
    y = F.conv2d(y, k[:, None, None, :], groups=b * c)
    y = F.conv2d(y, k[:, None, :, None], groups=b * c)
    return y.reshape(b, c, h, w)


class FaceImages:
    """CelebA-style aligned faces: crop box, small scale/shift jitter, flips, resize to `size`."""

    def __init__(self, root: str | Path, size: int = 128, *, jitter: bool = True, box=FACE_BOX,
                 exclude: Sequence[str] = ()) -> None:
        self.images = [Image.open(p).convert("RGB") for p in list_images(root, exclude)]
        for image in self.images:
            image.load()
        self.size, self.jitter, self.box = size, jitter, box

    def __len__(self) -> int:
        return len(self.images)

    def sample(self, rng: random.Random) -> Tensor:
        image = rng.choice(self.images)
        left, top, right, bottom = self.box
        if self.jitter:
            side = min((right - left) * rng.uniform(0.93, 1.03), image.width, image.height)
            cx = (left + right) / 2 + rng.uniform(-4, 4)
            cy = (top + bottom) / 2 + rng.uniform(-4, 4)
            cx = min(max(cx, side / 2), image.width - side / 2)
            cy = min(max(cy, side / 2), image.height - side / 2)
            box = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
        else:
            box = self.box
        crop = image.resize((self.size, self.size), Image.Resampling.BICUBIC, box=box, reducing_gap=None)
        if self.jitter and rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return to_unit_tensor(crop)


class NaturalImages:
    """Random `size` crops of photos with flips; with `min_scale` < 1, from the photo downscaled by
    a random factor in [min_scale, 1] (multi-scale, as DIV2K training does)."""

    def __init__(self, root: str | Path, size: int = 256, *, min_scale: float = 1.0,
                 exclude: Sequence[str] = ()) -> None:
        self.images = [Image.open(p).convert("RGB") for p in list_images(root, exclude)]
        for image in self.images:
            image.load()
        self.images = [im for im in self.images if min(im.size) >= size]
        if not self.images:
            raise ValueError(f"No image in {root} is at least {size} px on its short side.")
        self.size, self.min_scale = size, min_scale

    def __len__(self) -> int:
        return len(self.images)

    def sample(self, rng: random.Random) -> Tensor:
        image = rng.choice(self.images)
        scale = rng.uniform(max(self.min_scale, self.size / min(image.size)), 1) if self.min_scale < 1 else 1.0
        side = self.size / scale  # the window of the full-size photo that becomes one crop
        x = rng.uniform(0, image.width - side)
        y = rng.uniform(0, image.height - side)
        if scale == 1.0:
            crop = image.crop((int(x), int(y), int(x) + self.size, int(y) + self.size))
        else:
            crop = image.resize((self.size, self.size), Image.Resampling.BICUBIC, box=(x, y, x + side, y + side),
                                reducing_gap=None)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
        return to_unit_tensor(crop)


def natural_eval_crops(root: str | Path, size: int = 256) -> list[Tensor]:
    """The natural-image val protocol: four `size` crops per photo at the quadrant centres."""
    return [crop for path in list_images(root) for crop in natural_crops(Image.open(path).convert("RGB"), size)]


def natural_crops(image: Image.Image, size: int = 256) -> list[Tensor]:
    """The four `size` crops of one photo at its quadrant centres."""
    w, h = image.size
    crops = []
    for cx, cy in ((w / 4, h / 4), (3 * w / 4, h / 4), (w / 4, 3 * h / 4), (3 * w / 4, 3 * h / 4)):
        x = int(round(min(max(cx - size / 2, 0), w - size)))
        y = int(round(min(max(cy - size / 2, 0), h - size)))
        crops.append(to_unit_tensor(image.crop((x, y, x + size, y + size))))
    return crops


def face_eval_images(root: str | Path, size: int = 128) -> list[Tensor]:
    """Validation faces: the fixed crop box, no jitter, resized to `size`."""
    return [face_crop(Image.open(path), size) for path in list_images(root)]


def face_crop(image: Image.Image, size: int = 128) -> Tensor:
    """One aligned face cut by the fixed crop box, resized to `size`."""
    return to_unit_tensor(image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC, box=FACE_BOX, reducing_gap=None))


def random_patches(hr: Tensor, cond: Tensor, patch: int, rng: random.Random) -> tuple[Tensor, Tensor]:
    """The same random `patch` x `patch` window of each (hr, cond) pair."""
    if patch >= hr.shape[-1] and patch >= hr.shape[-2]:
        return hr, cond
    outs_h, outs_c = [], []
    for i in range(hr.shape[0]):
        y = rng.randint(0, hr.shape[-2] - patch)
        x = rng.randint(0, hr.shape[-1] - patch)
        outs_h.append(hr[i, :, y : y + patch, x : x + patch])
        outs_c.append(cond[i, :, y : y + patch, x : x + patch])
    return torch.stack(outs_h), torch.stack(outs_c)
