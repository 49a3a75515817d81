"""Real-world degradations: blur, resize, noise and JPEG, once or twice (Real-ESRGAN's recipe), for
training and the degraded val set; every choice comes from the generator `degrade` is given."""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from ..images.resample import bicubic, quantize, spatial_size

__all__ = ["Degradation", "degrade", "degrade_one", "VAL_KINDS", "val_kind"]

RESIZE_MODES = ("area", "bilinear", "bicubic", "nearest")
BLUR_KINDS = ("iso", "aniso", "generalized", "plateau")


@dataclass(frozen=True)
class Pass:
    """One pass of the pipeline: each stage runs with its probability; ranges are (low, high)."""

    blur_prob: float = 0.8
    blur_sigma: tuple[float, float] = (0.2, 2.0)        # in pixels of the image the pass blurs
    blur_kind_weights: tuple[float, ...] = (0.45, 0.25, 0.15, 0.15)  # BLUR_KINDS
    resize_scale: tuple[float, float] = (0.35, 1.2)     # pass 1: of the high-res size; pass 2: of the low-res size
    resize_mode_weights: tuple[float, ...] = (0.3, 0.3, 0.3, 0.1)    # RESIZE_MODES
    antialias_prob: float = 0.5                         # bilinear/bicubic downscales with anti-aliasing
    noise_prob: float = 0.6
    gaussian_share: float = 0.5                         # of noisy images: Gaussian, else Poisson
    gaussian_sigma: tuple[float, float] = (1.0, 15.0)   # in 8-bit levels
    poisson_scale: tuple[float, float] = (0.05, 2.0)
    gray_noise_prob: float = 0.4
    jpeg_prob: float = 0.6
    jpeg_quality: tuple[int, int] = (30, 95)


@dataclass(frozen=True)
class Degradation:
    """The pipeline: a clean share, pass 1, pass 2 (with its probability), final resize and JPEG."""

    clean_prob: float = 0.2            # pairs made the paper's way: anti-aliased bicubic only
    first: Pass = field(default_factory=Pass)
    second_prob: float = 0.5
    second: Pass = field(default_factory=lambda: Pass(blur_prob=0.5, blur_sigma=(0.2, 1.0), resize_scale=(0.8, 1.2),
                                                      gaussian_sigma=(1.0, 10.0), poisson_scale=(0.05, 1.5)))
    final_mode_weights: tuple[float, ...] = (0.3, 0.2, 0.4, 0.1)    # the last resize to exactly high-res / scale
    final_antialias_prob: float = 0.7
    final_jpeg_prob: float = 0.6
    final_jpeg_quality: tuple[int, int] = (30, 95)

    @classmethod
    def from_dict(cls, data: dict) -> Degradation:
        """A config block: keys of `Degradation`, and `first`/`second` dicts of `Pass` keys."""
        def build(kind: type, values: dict, where: str):
            known = {f.name for f in fields(kind)}
            unknown = sorted(set(values) - known)
            if unknown:
                raise ValueError(f"degradation{where}: unknown key(s) {unknown}; known: {sorted(known)}.")
            return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}

        top = build(cls, data, "")
        for name in ("first", "second"):
            if name in top:
                base = getattr(cls(), name)
                top[name] = Pass(**{**asdict(base), **build(Pass, top[name], f".{name}")})
        degradation = cls(**top)
        degradation.check()
        return degradation

    def check(self) -> None:
        """Probabilities in [0, 1], ranges ordered, JPEG qualities in 1-100."""
        def probability(name: str, value: float) -> None:
            if not 0 <= value <= 1:
                raise ValueError(f"degradation.{name} must be a probability from 0 to 1, got {value!r}.")

        def ordered(name: str, pair: tuple, low: float, high: float) -> None:
            if len(pair) != 2 or not low <= pair[0] <= pair[1] <= high:
                raise ValueError(f"degradation.{name} must be [low, high] with {low} <= low <= high <= {high}, "
                                 f"got {list(pair)!r}.")

        for name in ("clean_prob", "second_prob", "final_antialias_prob", "final_jpeg_prob"):
            probability(name, getattr(self, name))
        ordered("final_jpeg_quality", self.final_jpeg_quality, 1, 100)
        for prefix, p in (("first", self.first), ("second", self.second)):
            for name in ("blur_prob", "antialias_prob", "noise_prob", "gaussian_share", "gray_noise_prob", "jpeg_prob"):
                probability(f"{prefix}.{name}", getattr(p, name))
            ordered(f"{prefix}.blur_sigma", p.blur_sigma, 0.01, 20)
            ordered(f"{prefix}.resize_scale", p.resize_scale, 0.05, 4)
            ordered(f"{prefix}.gaussian_sigma", p.gaussian_sigma, 0, 255)
            ordered(f"{prefix}.poisson_scale", p.poisson_scale, 0, 100)
            ordered(f"{prefix}.jpeg_quality", p.jpeg_quality, 1, 100)


def degrade(hr: Tensor, scale: int, rng: np.random.Generator, spec: Degradation | None = None) -> Tensor:
    """Low-res inputs (B, C, H/scale, W/scale) on the 8-bit grid for high-res images in [-1, 1]."""
    spec = spec or Degradation()
    return torch.cat([degrade_one(image[None], scale, rng, spec) for image in hr])


def degrade_one(hr: Tensor, scale: int, rng: np.random.Generator, spec: Degradation) -> Tensor:
    size = (hr.shape[-2] // scale, hr.shape[-1] // scale)
    if rng.random() < spec.clean_prob:
        return quantize(bicubic(hr.float(), size))
    x = (hr.float() + 1) / 2  # [0, 1]
    x = _apply_pass(x, spec.first, rng, spatial_size(hr))
    if rng.random() < spec.second_prob:
        x = _apply_pass(x, spec.second, rng, size)
    x = _resize(x, size, _choice(rng, RESIZE_MODES, spec.final_mode_weights), rng.random() < spec.final_antialias_prob)
    if rng.random() < spec.final_jpeg_prob:
        x = jpeg(x, int(rng.integers(spec.final_jpeg_quality[0], spec.final_jpeg_quality[1] + 1)))
    return quantize(x * 2 - 1)


def _apply_pass(x: Tensor, p: Pass, rng: np.random.Generator, reference: tuple[int, int]) -> Tensor:
    """Blur, resize (relative to `reference`), noise, JPEG: each with its probability."""
    if rng.random() < p.blur_prob:
        x = blur(x, random_kernel(rng, p))
    factor = rng.uniform(*p.resize_scale)
    target = (max(4, round(reference[0] * factor)), max(4, round(reference[1] * factor)))
    x = _resize(x, target, _choice(rng, RESIZE_MODES, p.resize_mode_weights), rng.random() < p.antialias_prob)
    if rng.random() < p.noise_prob:
        gray = rng.random() < p.gray_noise_prob
        if rng.random() < p.gaussian_share:
            x = gaussian_noise(x, rng.uniform(*p.gaussian_sigma) / 255, gray, rng)
        else:
            x = poisson_noise(x, rng.uniform(*p.poisson_scale), gray, rng)
    if rng.random() < p.jpeg_prob:
        x = jpeg(x, int(rng.integers(p.jpeg_quality[0], p.jpeg_quality[1] + 1)))
    return x


def _choice(rng: np.random.Generator, options: tuple[str, ...], weights: tuple[float, ...]) -> str:
    w = np.asarray(weights, dtype=np.float64)
    return options[int(rng.choice(len(options), p=w / w.sum()))]


def _resize(x: Tensor, size: tuple[int, int], mode: str, antialias: bool) -> Tensor:
    """Resize (1, C, H, W) by `mode`, antialiased where torch offers it."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode in ("bilinear", "bicubic"):
        y = F.interpolate(x, size=size, mode=mode, antialias=antialias, align_corners=False)
    else:
        y = F.interpolate(x, size=size, mode=mode)
    return y.clamp(0, 1)


def random_kernel(rng: np.random.Generator, p: Pass) -> Tensor:
    """A normalised 2-D blur kernel (odd size 7-21): Gaussian, generalized Gaussian or plateau."""
    kind = _choice(rng, BLUR_KINDS, p.blur_kind_weights)
    sx = rng.uniform(*p.blur_sigma)
    sy = sx if kind == "iso" else rng.uniform(*p.blur_sigma)
    theta = rng.uniform(0, math.pi)
    radius = int(min(10, max(3, math.ceil(3 * max(sx, sy)))))
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    inv_cov = np.linalg.inv(rot @ np.diag([sx**2, sy**2]) @ rot.T)
    grid = np.arange(-radius, radius + 1)
    xx, yy = np.meshgrid(grid, grid)
    points = np.stack([xx, yy], -1).astype(np.float64)
    d = np.einsum("...i,ij,...j->...", points, inv_cov, points)  # squared Mahalanobis distance
    if kind == "generalized":
        k = np.exp(-0.5 * d ** rng.uniform(0.5, 4.0))
    elif kind == "plateau":
        k = 1 / (1 + d ** rng.uniform(1.0, 2.0))
    else:
        k = np.exp(-0.5 * d)
    return torch.from_numpy(k / k.sum()).float()


def blur(x: Tensor, kernel: Tensor) -> Tensor:
    """Convolve each channel of (1, C, H, W) with `kernel`, reflecting at the borders."""
    r = kernel.shape[-1] // 2
    c = x.shape[1]
    mode = "reflect" if r < min(x.shape[-2:]) else "replicate"
    y = F.pad(x, (r, r, r, r), mode=mode)
    return F.conv2d(y, kernel[None, None].expand(c, 1, -1, -1), groups=c)


def gaussian_noise(x: Tensor, sigma: float, gray: bool, rng: np.random.Generator) -> Tensor:
    """Add N(0, sigma) in [0, 1] units, the same in every channel when `gray`."""
    shape = (1, 1, *x.shape[-2:]) if gray else tuple(x.shape)
    noise = torch.from_numpy(rng.standard_normal(shape).astype(np.float32)) * sigma
    return (x + noise).clamp(0, 1)


def poisson_noise(x: Tensor, scale: float, gray: bool, rng: np.random.Generator) -> Tensor:
    """Shot noise: Poisson counts at a random photon level, scaled; on luminance when `gray`."""
    base = x.mean(1, keepdim=True) if gray else x
    levels = 2 ** np.ceil(np.log2(max(len(np.unique((base.numpy() * 255).round())), 2)))
    counts = rng.poisson(base.clamp(0, 1).numpy() * levels) / levels
    noise = torch.from_numpy(counts.astype(np.float32)) - base
    return (x + noise * scale).clamp(0, 1)


def jpeg(x: Tensor, quality: int) -> Tensor:
    """Round-trip (1, 3, H, W) in [0, 1] through Pillow's JPEG encoder at `quality`."""
    array = (x[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    decoded = np.asarray(Image.open(buffer).convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(decoded).permute(2, 0, 1)[None]


_OFF = Pass(blur_prob=0, noise_prob=0, jpeg_prob=0, resize_scale=(1, 1))
# The degraded validation set, one kind each (for a x4 model; `noise` is added at the low resolution), seeded per kind.
VAL_KINDS: dict[str, Degradation] = {
    "jpeg": Degradation(clean_prob=0, first=_OFF, second_prob=0, final_mode_weights=(0, 0, 1, 0),
                        final_antialias_prob=1, final_jpeg_prob=1, final_jpeg_quality=(40, 80)),
    "noise": Degradation(clean_prob=0, first=Pass(blur_prob=0, resize_scale=(0.25, 0.25), resize_mode_weights=(0, 0, 1, 0),
                                                  antialias_prob=1, noise_prob=1, jpeg_prob=0,
                                                  gaussian_sigma=(2, 10), poisson_scale=(0.5, 2)),
                         second_prob=0, final_mode_weights=(0, 0, 1, 0), final_antialias_prob=1, final_jpeg_prob=0),
    "aliased": Degradation(clean_prob=0, first=_OFF, second_prob=0, final_mode_weights=(0, 0.5, 0, 0.5),
                           final_antialias_prob=0, final_jpeg_prob=0),
    "blur": Degradation(clean_prob=0, first=Pass(blur_prob=1, blur_sigma=(1.0, 3.0), resize_scale=(1, 1),
                                                 noise_prob=0, jpeg_prob=0),
                        second_prob=0, final_mode_weights=(0, 0, 1, 0), final_antialias_prob=1, final_jpeg_prob=0),
    "mixed": Degradation(clean_prob=0),
}
VAL_SEED = 20261207


def val_kind(hr: Tensor, scale: int, kind: str) -> Tensor:
    """The degraded val inputs of one kind for the (B, C, H, W) val images (fixed seed per kind)."""
    if kind not in VAL_KINDS:
        raise ValueError(f"Unknown degradation kind {kind!r}; expected one of {', '.join(VAL_KINDS)}.")
    rng = np.random.default_rng([VAL_SEED, list(VAL_KINDS).index(kind)])
    return degrade(hr, scale, rng, VAL_KINDS[kind])
