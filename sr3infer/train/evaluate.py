"""`sr3infer eval MODEL DATA`: PSNR, SSIM, consistency, FID and KID of a model beside bicubic."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .. import seeding
from ..errors import UsageError, first_line
from ..images.io import load_image
from ..images.resample import bicubic, spatial_size
from .data import FACE_BOX, face_crop, list_images, make_lowres, natural_crops, to_unit_tensor
from .degrade import val_kind
from ..quality import metrics

log = logging.getLogger(__name__)

PROTOCOLS = ("faces", "natural", "plain")


def load_eval_set(data: str | Path, protocol: str, out_size: int, limit: int | None = None, *, scale: int = 1,
                  skipped: list[tuple[str, str]] | None = None) -> list[Tensor]:
    """High-res validation images (3, H, W) in [-1, 1] by protocol.

    faces: CelebA aligned, crop box (0, 20, 178, 198) resized to out_size; natural: four out_size
    crops per photo at the quadrant centres; plain: every image, cropped to a multiple of `scale`.
    Unreadable or too small files (plain: of another size) are skipped, named in `skipped`.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"Unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}.")
    images: list[Tensor] = []
    first: tuple[int, int] | None = None
    dropped: list[tuple[str, str]] = []
    for path in list_images(data):
        if limit and len(images) >= limit:
            break
        try:
            image = load_image(path).convert("RGB")
        except (ValueError, OSError) as err:
            dropped.append((str(path), first_line(err)))
            continue
        w, h = image.size
        if protocol == "faces":
            if w < FACE_BOX[2] or h < FACE_BOX[3]:
                dropped.append((str(path), f"{w}x{h} is smaller than the faces protocol's crop box "
                                     f"{FACE_BOX[2]}x{FACE_BOX[3]} (CelebA aligned faces)"))
                continue
            images.append(face_crop(image, out_size))
        elif protocol == "natural":
            if min(w, h) < out_size:
                dropped.append((str(path), f"{w}x{h} is smaller than the natural protocol's {out_size}x{out_size} crops"))
                continue
            images.extend(natural_crops(image, out_size))
        else:
            w, h = w // scale * scale, h // scale * scale
            if min(w, h) < max(11, scale):
                dropped.append((str(path), f"{image.width}x{image.height} is too small: the plain protocol needs at least "
                                     f"{max(11, scale)} px a side (the SSIM window, and x{scale} the model's scale)"))
                continue
            if first is not None and (w, h) != first:
                dropped.append((str(path), f"{w}x{h} differs from the first image's {first[0]}x{first[1]}; the plain "
                                     "protocol scores images of one size (put other sizes in another folder)"))
                continue
            first = (w, h)
            images.append(to_unit_tensor(image.crop((0, 0, w, h))))
    if not images:
        shown = "; ".join(f"{Path(p).name}: {reason}" for p, reason in dropped[:3])
        raise ValueError(f"No usable image in {str(data)!r} for the {protocol} protocol; {len(dropped)} skipped ("
                         f"{shown}{'; ...' if len(dropped) > 3 else ''}).")
    if skipped is not None:
        skipped.extend(dropped)
    else:
        for file, reason in dropped:
            log.warning("sr3infer eval: skipped %s: %s", file, reason)
    return images[:limit] if limit else images


def _reference_cache_dir() -> Path:
    return Path(os.environ.get("SR3INFER_CACHE", Path.home() / ".cache" / "sr3infer")) / "kid_reference"


def reference_features(folders: list[str | Path], protocol: str, out_size: int) -> Tensor:
    """Inception features of the real high-res set for KID/FID by `protocol`, cached under
    $SR3INFER_CACHE (keyed by protocol, size and every file's sha256)."""
    from safetensors.torch import load_file, save_file

    key = hashlib.sha256(f"{protocol}:{out_size}".encode())
    for folder in folders:
        for path in list_images(folder):
            key.update(path.name.encode() + hashlib.sha256(path.read_bytes()).digest())
    cache = _reference_cache_dir() / f"{key.hexdigest()[:32]}.safetensors"
    if cache.is_file():
        return load_file(cache)["features"]
    images = [image for folder in folders for image in load_eval_set(folder, protocol, out_size)]
    features = metrics.inception_features(torch.stack(images))
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    save_file({"features": features.contiguous()}, str(tmp))
    os.replace(tmp, cache)
    return features


def score_images(pred: Tensor, hr: Tensor, lowres: Tensor, reference: Tensor | None = None) -> dict[str, float]:
    """Mean PSNR, SSIM and consistency (x1e-5) of `pred`; with `reference` also FID and KID."""
    scores = {
        "psnr": float(metrics.psnr(pred, hr).mean()),
        "ssim": float(metrics.ssim(pred, hr).mean()),
        "consistency_1e5": float(metrics.consistency(pred, lowres).mean() * 1e5),
    }
    if reference is not None:
        features = metrics.inception_features(pred)
        scores["fid"] = metrics.frechet_distance(features, reference)
        scores["kid_1e3"] = metrics.kernel_inception_distance(features, reference) * 1e3
    return scores


_CALL_OPTIONS = ("tile_size", "tile_overlap", "tile_batch_size", "max_output_pixels", "callback")


def evaluate(
    upscaler,
    hr_images: list[Tensor],
    *,
    batch_size: int = 8,
    seed: int = 0,
    fid: bool = True,
    reference: Tensor | None = None,
    progress: bool = False,
    degradation: str | None = None,
    **sampling: Any,
) -> dict[str, Any]:
    """Upscale low-res versions of `hr_images` (SR3's bicubic, or a `degradation` kind) and score
    them beside bicubic; FID and KID (unless `fid=False`) against `reference`, else `hr_images`."""
    scale = upscaler.config.scale
    settings = dict(sampling)
    k_samples = upscaler.sampling_recipe(settings.pop("recipe", None), settings.pop("preset", None),
                                         **{k: v for k, v in settings.items() if k not in _CALL_OPTIONS}).num_samples
    batch_size = max(1, batch_size // k_samples)  # K samples per image: the same number of U-Net inputs per call
    degraded = val_kind(torch.stack(hr_images), scale, degradation) if degradation else None
    outputs, bicubics, lowress, hrs = [], [], [], []
    started = time.time()
    for start in range(0, len(hr_images), batch_size):
        hr = torch.stack(hr_images[start : start + batch_size])
        lowres = make_lowres(hr, scale) if degraded is None else degraded[start : start + batch_size]
        # image i: seed + i, or with K samples seed + i*K + j (the seeds `Upscaler.upscale(seed=seed)` gives)
        gens = seeding.generators(seed, len(hr), num_samples=k_samples, first=start)
        out = upscaler.upscale_tensor(lowres, generator=gens, progress=progress, **sampling).cpu().float()
        outputs.append(out)
        bicubics.append(bicubic(lowres, spatial_size(hr)).clamp(-1, 1))
        lowress.append(lowres)
        hrs.append(hr)
    seconds = time.time() - started
    out, bic, lowres, hr = (torch.cat(t) for t in (outputs, bicubics, lowress, hrs))

    if fid and metrics.FID_AVAILABLE and reference is None:
        reference = metrics.inception_features(hr)
    elif not (fid and metrics.FID_AVAILABLE):
        reference = None
    result: dict[str, Any] = {
        "model": score_images(out, hr, lowres, reference),
        "bicubic": score_images(bic, hr, lowres, reference),
        "images": len(hr),
        "seconds": round(seconds, 1),
    }
    result["outputs"] = out
    return result


def format_table(result: dict[str, Any]) -> str:
    keys = [k for k in ("psnr", "ssim", "consistency_1e5", "kid_1e3", "fid") if k in result["model"]]
    header = "| method | " + " | ".join(keys) + " |"
    lines = [header, "|" + "---|" * (len(keys) + 1)]
    for name in ("model", "bicubic"):
        row = result[name]
        lines.append(f"| {name} | " + " | ".join(f"{row[k]:.4g}" if k != "psnr" else f"{row[k]:.2f}" for k in keys) + " |")
    return "\n".join(lines)


def plan_outputs(json_path: str | None, save_dir: str | None, count: int, *, overwrite: bool = False) -> list[Path]:
    """The `count` image paths of `save_dir` (none without it); UsageError, before the evaluation,
    for a name that exists without `overwrite`, a folder that is a file, or `json_path` clashing."""
    images = [Path(save_dir) / f"{i:04d}.png" for i in range(count)] if save_dir else []
    if save_dir and os.path.lexists(save_dir) and not Path(save_dir).is_dir():
        raise UsageError(f"--save-dir {save_dir!r} is a file; name a folder (new, or without 0000.png, ...)")
    for flag, target in (("--save-dir", save_dir), ("--json", json_path)):
        parent = next((p for p in Path(target).absolute().parents if p.exists()), None) if target else None
        if parent is not None and not parent.is_dir():
            raise UsageError(f"{flag} {target!r} is under {str(parent)!r}, which is a file; name a path in a folder")
    if json_path:
        if Path(json_path).is_dir():
            raise UsageError(f"--json {json_path!r} is a folder; name a file such as result.json")
        if Path(json_path).absolute() in {p.absolute() for p in images}:
            raise UsageError(f"--json {json_path!r} is also one of the images --save-dir writes; name another file")
        if os.path.lexists(json_path) and not overwrite:
            raise UsageError(f"--json {json_path!r} already exists; pass --overwrite to replace it, or name a new file")
    taken = [p.name for p in images if os.path.lexists(p)]
    if taken and not overwrite:
        shown = ", ".join(taken[:3]) + (", ..." if len(taken) > 3 else "")
        raise UsageError(f"--save-dir {save_dir!r} already holds {shown} ({len(taken)} of the {count} names this run "
                         "writes); pass --overwrite to replace them, or name a new or empty folder")
    return images

