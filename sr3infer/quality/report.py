"""Per-image fidelity report: consistency with the input, uncertainty, and the "made-up" mask of
pixels whose std across samples is above the model's calibrated threshold (where, on val, the error
exceeds `MADEUP_ERROR` at least `MADEUP_PRECISION` of the time)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image
from torch import Tensor

from ..outputs import consistency_error

__all__ = ["MADEUP_ERROR", "MADEUP_PRECISION", "ImageReport", "consistency_mse", "madeup_mask", "image_report",
           "madeup_threshold", "image_reports", "calibration_curve", "choose_threshold", "mask_paths", "write_report",
           "mask_overlay", "save_mask_overlay"]

MADEUP_ERROR = 0.1
"""|output - truth| (mean over colour channels, [0, 1] units) from which a pixel counts as made up."""

MADEUP_PRECISION = 0.5
"""The calibrated threshold is the lowest std above which at least this share of pixels is made up (on val)."""

_OVERLAY = (255, 0, 255)  # magenta: the mask's colour in `mask_overlay`, rare in photos and faces


@dataclass
class ImageReport:
    """What one output can be trusted for. Sizes are (width, height); values in [0, 1] pixel units."""

    input_size: tuple[int, int]
    output_size: tuple[int, int]
    consistency: float                       # MSE of bicubic-down(output) vs the input
    num_samples: int
    uncertainty_mean: float | None = None    # of the per-pixel std map (num_samples >= 2)
    uncertainty_p95: float | None = None
    madeup_threshold: float | None = None    # the model's calibrated std threshold, None if it has none
    madeup_fraction: float | None = None     # share of output pixels in the mask
    note: str = ""                           # why a field is None
    mask: np.ndarray | None = field(default=None, repr=False)  # (H, W) bool, True = made up

    def to_dict(self) -> dict[str, Any]:
        """The JSON fields (the mask itself is written by `save_mask_overlay`)."""
        out = {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "mask"}
        out["input_size"], out["output_size"] = list(self.input_size), list(self.output_size)
        return out


def consistency_mse(output: Tensor, lowres: Tensor) -> float:
    """SR3's consistency: MSE in [0, 1] units of bicubic downsampled `output` minus `lowres`."""
    return consistency_error(output, lowres) ** 2


def madeup_threshold(config: Any) -> float | None:
    return getattr(getattr(config, "report", None), "madeup_std_threshold", None)


def madeup_mask(uncertainty: np.ndarray, threshold: float) -> np.ndarray:
    """(H, W) bool: the pixels whose std is above `threshold`."""
    return np.asarray(uncertainty) > threshold


def image_report(output: Tensor, lowres: Tensor, *, uncertainty: np.ndarray | None = None, num_samples: int = 1,
                 threshold: float | None = None, rms_error: float | None = None) -> ImageReport:
    """The report of one output (1, 3, H, W) for its input (1, 3, h, w), both in [-1, 1];
    `uncertainty` is its std map (None for one sample), `rms_error` its error if known."""
    height, width = output.shape[-2:]
    mse = consistency_mse(output, lowres) if rms_error is None else rms_error ** 2
    report = ImageReport(input_size=(lowres.shape[-1], lowres.shape[-2]), output_size=(width, height),
                         consistency=mse, num_samples=num_samples,
                         madeup_threshold=threshold)
    if uncertainty is None:
        report.note = "one sample: no uncertainty map nor made-up mask (use num_samples >= 2, e.g. 4)"
        return report
    std = np.asarray(uncertainty, dtype=np.float64)
    report.uncertainty_mean, report.uncertainty_p95 = float(std.mean()), float(np.percentile(std, 95))
    if threshold is None:
        report.note = "no made-up threshold is calibrated for this model (config.json report.madeup_std_threshold)"
        return report
    report.mask = madeup_mask(std, threshold)
    report.madeup_fraction = float(report.mask.mean())
    return report


def image_reports(outputs: Sequence[Tensor], inputs: Sequence[Tensor], maps: Sequence[np.ndarray] | None,
                  num_samples: int, config: Any, rms_errors: Sequence[float] | None = None) -> list[ImageReport]:
    """The report of each output against its input (`image_report`), with the model's threshold."""
    threshold = madeup_threshold(config)
    return [image_report(out, rgb, uncertainty=None if maps is None else maps[i], num_samples=num_samples,
                         threshold=threshold, rms_error=None if rms_errors is None else rms_errors[i])
            for i, (out, rgb) in enumerate(zip(outputs, inputs))]


def calibration_curve(std: np.ndarray, error: np.ndarray, thresholds: Sequence[float],
                      error_level: float = MADEUP_ERROR) -> list[dict[str, float]]:
    """Per threshold t: precision P(error > error_level | std > t), coverage, recall, pixels."""
    std, wrong = np.ravel(std), np.ravel(error) > error_level
    order = np.argsort(std, kind="mergesort")
    std_sorted, wrong_sorted = std[order], wrong[order]
    wrong_above = np.concatenate([np.cumsum(wrong_sorted[::-1])[::-1], [0]])  # wrong pixels from index i on
    total_wrong = max(int(wrong.sum()), 1)
    rows = []
    for t in thresholds:
        first = int(np.searchsorted(std_sorted, t, side="right"))  # the first pixel with std > t
        above = len(std) - first
        hits = int(wrong_above[first])
        rows.append({"threshold": float(t), "precision": hits / above if above else float("nan"),
                     "coverage": above / len(std), "recall": hits / total_wrong, "pixels": above})
    return rows


def choose_threshold(curve: list[dict[str, float]], precision: float = MADEUP_PRECISION, min_pixels: int = 100,
                     key: str = "precision") -> dict[str, float] | None:
    """The lowest threshold at which `key` (precision or a lower bound of it) reaches `precision`
    and stays there above it (with at least `min_pixels` pixels); None when none does."""
    chosen = None
    for row in sorted(curve, key=lambda r: -r["threshold"]):  # from the highest threshold down
        if row["pixels"] < min_pixels:
            continue
        if row[key] is None or not row[key] >= precision:
            break
        chosen = row
    return chosen


def mask_paths(target: str | os.PathLike | None, folder_input: bool, outputs: Sequence[Path]) -> list[Path] | None:
    """Where `--report-mask target` writes masks: `target/NAME_madeup.png` (folders) or `target`."""
    if target is None:
        return None
    slash = str(target).endswith(("/", os.sep))
    target = Path(target)
    if folder_input and target.exists() and not target.is_dir():
        raise ValueError(f"input is a folder, so --report-mask must be a folder; {str(target)!r} is a file")
    if folder_input or slash or target.is_dir():
        return [target / f"{Path(out).stem}_madeup.png" for out in outputs]
    return [target]


def write_report(reports: dict[str, ImageReport], path: str | os.PathLike, *, model: str | None = None,
                 calibration: dict[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Write the reports of named images as JSON, atomically, with the threshold's meaning."""
    from ..images.io import write_atomically

    data = {"model": model, "madeup_rule": f"std > threshold: on val, |error| > {MADEUP_ERROR} at least "
                                           f"{MADEUP_PRECISION:.0%} of the time there",
            "calibration": calibration, "images": {name: r.to_dict() for name, r in reports.items()}}
    text = (json.dumps(data, indent=2, allow_nan=False) + "\n").encode()
    return write_atomically(path, lambda handle: handle.write(text), overwrite=overwrite)


def mask_overlay(image: Image.Image | np.ndarray, mask: np.ndarray | None, alpha: float = 0.7) -> Image.Image:
    """The output `image` in gray, with the mask's pixels tinted magenta."""
    if mask is None:
        raise ValueError("There is no made-up mask: the model has no calibrated threshold "
                         "(config.json report.madeup_std_threshold), or the run drew one sample (use num_samples >= 2).")
    if isinstance(image, Image.Image) and image.mode not in ("I;16", "I", "F"):  # 16-bit and float: as arrays
        image = image.convert("RGB")
    raw = np.asarray(image)
    array = raw.astype(np.float64) / {"u": float(np.iinfo(raw.dtype).max) if raw.dtype.kind == "u" else 1.0,
                                      "i": 65535.0}.get(raw.dtype.kind, 1.0)
    array = np.repeat(array[..., None], 3, -1) if array.ndim == 2 else array[..., :3]
    array = np.repeat(array, 3, -1) if array.shape[-1] == 1 else array
    if mask.shape != array.shape[:2]:
        raise ValueError(f"The mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
                         f"{array.shape[1]}x{array.shape[0]}; pass the mask of this output.")
    gray = np.repeat(array.mean(-1, keepdims=True), 3, -1) * 0.8 + 0.1  # dimmed, so the tint stands out
    tinted = gray * (1 - alpha) + np.array(_OVERLAY) / 255 * alpha
    out = np.where(mask[..., None], tinted, gray)
    return Image.fromarray(np.round(np.clip(out, 0, 1) * 255).astype(np.uint8), mode="RGB")


def save_mask_overlay(image: Image.Image | np.ndarray, mask: np.ndarray | None, path: str | os.PathLike, *,
                      overwrite: bool = False) -> Path:
    from ..images.io import save_image

    return save_image(mask_overlay(image, mask), path, overwrite=overwrite)

