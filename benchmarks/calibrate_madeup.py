"""Calibrate the fidelity report's made-up mask: the per-pixel std threshold above which the error exceeds 0.1 at
least half the time, on validation images.

    nice -n 10 python benchmarks/calibrate_madeup.py --models sr3-face-8x --budget 900
    nice -n 10 python benchmarks/calibrate_madeup.py --models sr3-64-256 --budget 900
    python benchmarks/calibrate_madeup.py --limit 2 --json /tmp/m.json          # a quick check

For each model (sr3-face-8x on CelebA val, protocol faces; sr3-64-256 on the natural val crops), images are
upscaled one by one with the model's default recipe and K samples (default 4; sample k of image i uses seed
i * K + k) until the time budget is spent. Per pixel: the std of the K samples (mean over channels, [0, 1]
units, as `UpscaleOutput.uncertainty`) and the |error| of the output (the projected mean of the K samples) against the
original (mean over channels). The curve gives, per threshold t, the precision P(|error| > 0.1 | std > t), the
coverage (share of pixels with std > t) and the recall; the chosen threshold is
`sr3infer.quality.report.choose_threshold`'s (lowest t with precision >= 0.5 there and above). A split check picks the
threshold on the even-numbered images and states its precision on the odd ones. Each model is merged into
benchmarks/results/madeup_calibration.json; write the threshold into the model's config.json
(`report.madeup_std_threshold`) with --write-config (then scripts/update_manifest.py). --picture draws the report of
a few val images (examples/report_mask.png):

    python benchmarks/calibrate_madeup.py --picture examples/report_mask.png --faces 0 1 3 8
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from sr3infer import Upscaler
from sr3infer.models.config import ModelConfig, ReportSettings
from sr3infer.hub.manifest import load_manifest
from sr3infer.quality.report import MADEUP_ERROR, MADEUP_PRECISION, calibration_curve, choose_threshold, mask_overlay
from sr3infer.train.data import make_lowres
from sr3infer.train.evaluate import load_eval_set

from bench_data import DATASETS as SHARED, require  # a sibling module: run this file as a script
from sr3infer.sampling.uncertainty import HEATMAP_MAX, heatmap

HERE = Path(__file__).resolve().parent
MODELS = {"sr3-face-8x": (SHARED / "celeba" / "val", "faces"), "sr3-64-256": (SHARED / "natural" / "val", "natural")}
THRESHOLDS = np.round(np.arange(0.0025, 0.2001, 0.0025), 4)
MIN_PIXELS = 100  # a threshold with fewer pixels above it says nothing about precision
COMMAND = "python benchmarks/calibrate_madeup.py " + " ".join(sys.argv[1:])
RULE = "precision_p05"  # "at least half the time" must hold in 95% of draws of the images, not only on average


def upscale_with_map(upscaler: Upscaler, lowres: torch.Tensor, k: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """The output (1, 3, H, W) in [0, 1] and the (H, W) std map of K samples of one (1, 3, h, w) input in [0, 1]."""
    out = upscaler.upscale(lowres, num_samples=k, seed=seed, output_type="pt", progress=False,
                           return_dict=True, batch_size=k)
    images, maps = out.images, out.uncertainty
    maps = np.asarray(maps, dtype=np.float32)
    return torch.as_tensor(images).float().reshape(1, 3, *maps.shape[-2:]), maps.reshape(maps.shape[-2:])


def sample_maps(name: str, args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, list[float], int]:
    """Per image the (H, W) std of K samples and |error| of the output, the seconds each took, the images available."""
    data, protocol = MODELS[name]
    upscaler = Upscaler.from_pretrained(name, device="cpu")
    hr = load_eval_set(data, protocol, upscaler.config.out_size, args.limit)
    stds, errors, seconds = [], [], []
    began = time.perf_counter()
    for i, image in enumerate(hr):
        if time.perf_counter() - began > args.budget:
            break
        t0 = time.perf_counter()
        lowres = make_lowres(image[None], upscaler.config.scale)
        output, std = upscale_with_map(upscaler, (lowres + 1) / 2, args.k, args.seed + i * args.k)
        errors.append((output - (image[None] + 1) / 2).abs().mean(1)[0].numpy())
        stds.append(std)
        seconds.append(time.perf_counter() - t0)
        print(f"  {name}: {i + 1}/{len(hr)} images, {seconds[-1]:.1f} s, mean std {std.mean():.4f}, "
              f"mean |error| {errors[-1].mean():.4f}", flush=True)
    return np.stack(stds), np.stack(errors), seconds, len(hr)


def bootstrap_precision(std: np.ndarray, error: np.ndarray, rounds: int = 1000, seed: int = 0) -> np.ndarray:
    """(2, len(THRESHOLDS)): the 5th and 95th percentiles of the precision at each threshold over `rounds` draws of
    the images with replacement (how much it depends on which images were drawn)."""
    per_image = [calibration_curve(s, e, THRESHOLDS) for s, e in zip(std, error)]
    above = np.array([[row["pixels"] for row in curve] for curve in per_image], dtype=np.float64)
    hits = np.array([[row["recall"] * max(int((e > MADEUP_ERROR).sum()), 1) for row in curve]
                     for curve, e in zip(per_image, error)])
    draws = np.random.default_rng(seed).integers(0, len(std), (rounds, len(std)))
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # thresholds with no pixel above them in any draw: nan
        precision = hits[draws].sum(1) / above[draws].sum(1)
        return np.nanpercentile(precision, [5, 95], axis=0)


def with_bounds(curve: list[dict[str, Any]], std: np.ndarray, error: np.ndarray) -> list[dict[str, Any]]:
    """The curve with each threshold's bootstrap precision_p05 / precision_p95 (nan, where no pixel is above: null)."""
    for row, low, high in zip(curve, *bootstrap_precision(std, error)):
        row["precision_p05"], row["precision_p95"] = float(low), float(high)
        row.update({key: None for key, value in row.items() if value != value})
    return curve


def run_model(name: str, args: argparse.Namespace) -> dict[str, Any]:
    data, protocol = MODELS[name]
    if args.raw and Path(args.raw.format(name=name)).exists():  # recompute the curve from saved maps
        saved = np.load(args.raw.format(name=name))
        std_all, err_all, seconds, available = saved["std"], saved["error"], list(saved["seconds"]), int(saved["available"])
        sampled_by = str(saved["command"])
    else:
        std_all, err_all, seconds, available = sample_maps(name, args)
        sampled_by = COMMAND
        if args.raw:
            np.savez_compressed(args.raw.format(name=name), std=std_all, error=err_all, seconds=seconds,
                                available=available, command=COMMAND)
    curve = with_bounds(calibration_curve(std_all, err_all, THRESHOLDS), std_all, err_all)
    chosen = choose_threshold(curve, min_pixels=MIN_PIXELS, key=RULE)
    point = choose_threshold(curve, min_pixels=MIN_PIXELS)
    even = choose_threshold(with_bounds(calibration_curve(std_all[0::2], err_all[0::2], THRESHOLDS), std_all[0::2],
                                        err_all[0::2]), min_pixels=MIN_PIXELS, key=RULE)
    held_out = None
    if even is not None and len(std_all) > 1:
        (row,) = calibration_curve(std_all[1::2], err_all[1::2], [even["threshold"]])
        held_out = {"threshold_from_even_images": even["threshold"], "precision_on_odd_images": row["precision"],
                    "coverage_on_odd_images": row["coverage"], "pixels_on_odd_images": row["pixels"]}
    return {
        "model": name, "data": str(data.relative_to(SHARED.parent.parent)), "protocol": protocol,
        "images": len(std_all), "images_available": available, "budget_s": args.budget, "k": args.k,
        "recipe": Upscaler.from_pretrained(name, device="cpu").config.sampling.to_dict(), "seed": args.seed,
        "seconds_per_image": float(np.mean(seconds)), "pixels": int(std_all.size),
        "share_error_above": float((err_all > MADEUP_ERROR).mean()), "mean_std": float(std_all.mean()),
        "error_level": MADEUP_ERROR, "precision_target": MADEUP_PRECISION, "min_pixels": MIN_PIXELS,
        "rule": f"lowest threshold whose {RULE} (and that of every higher threshold with >= {MIN_PIXELS} pixels "
                f"above it) is >= {MADEUP_PRECISION}", "chosen": chosen, "point_estimate_rule": point,
        "held_out_check": held_out, "curve": curve,
        "sampled_by": sampled_by, "command": COMMAND,
    }


def write_config(name: str, threshold: float, result: dict[str, Any]) -> None:
    """Store the threshold (and where it comes from) under "report" in the bundled config.json; then run
    scripts/update_manifest.py for its new sha256."""
    path = load_manifest().bundled_dir(name) / "config.json"
    report = ReportSettings(madeup_std_threshold=threshold, madeup_precision=round(result["chosen"]["precision"], 4),
                            calibration=f"benchmarks/calibrate_madeup.py: {result['images']} val images ({result['protocol']} "
                                        f"protocol), K={result['k']}; madeup_precision = P(|error| > {MADEUP_ERROR} | "
                                        "std > threshold) there")
    path.write_text(ModelConfig.from_json_file(path).replace(report=report).to_json())
    print(f"wrote report.madeup_std_threshold = {threshold} into {path}")


def titled(columns: list[tuple[str, list[Image.Image]]]) -> Image.Image:
    """Columns of equal pictures under a 16 px title row."""
    cell_w, cell_h = columns[0][1][0].size
    sheet = Image.new("RGB", (cell_w * len(columns), 16 + cell_h * len(columns[0][1])), "white")
    draw = ImageDraw.Draw(sheet)
    for x, (title, cells) in enumerate(columns):
        draw.text((x * cell_w + 3, 2), title, fill="black")
        for y, cell in enumerate(cells):
            sheet.paste(cell, (x * cell_w, 16 + y * cell_h))
    return sheet


def draw_picture(name: str, args: argparse.Namespace) -> None:
    """The report of `args.faces` val images through the library (`return_report=True`, the model's stored
    threshold): input | output | std | made-up mask (as --report-mask writes it) | where |error| > 0.1 really is."""
    data, protocol = MODELS[name]
    upscaler = Upscaler.from_pretrained(name, device="cpu")
    hr = load_eval_set(data, protocol, upscaler.config.out_size)
    hr = (torch.stack([hr[i] for i in args.faces]) + 1) / 2
    lowres = (make_lowres(hr * 2 - 1, upscaler.config.scale) + 1) / 2
    out = upscaler.upscale(list(lowres), num_samples=args.k, seed=args.seed, output_type="pt", progress=False,
                           return_report=True)

    def rgb(unit: torch.Tensor) -> Image.Image:
        return Image.fromarray((unit.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())

    outputs = [rgb(image) for image in out.images]
    wrong = [(image - truth).abs().mean(0).numpy() > MADEUP_ERROR for image, truth in zip(out.images, hr)]
    big = torch.nn.functional.interpolate(lowres, size=hr.shape[-2:], mode="nearest")
    threshold = out.report[0].madeup_threshold
    titled([("input", [rgb(x) for x in big]), (f"output (K={args.k})", outputs),
            (f"std 0-{HEATMAP_MAX:g}", [heatmap(u) for u in out.uncertainty]),
            (f"made up: std>{threshold:g}", [mask_overlay(o, r.mask) for o, r in zip(outputs, out.report)]),
            (f"|error|>{MADEUP_ERROR:g} (truth)", [mask_overlay(o, w) for o, w in zip(outputs, wrong)])],
           ).save(args.picture)
    for index, report, w in zip(args.faces, out.report, wrong):
        right = float((w & report.mask).sum() / max(int(report.mask.sum()), 1))
        print(f"  image {index}: consistency {report.consistency:.1e}, std mean {report.uncertainty_mean:.4f} p95 "
              f"{report.uncertainty_p95:.4f}, made up {report.madeup_fraction:.2%} of pixels ({right:.0%} of them off "
              f"by > {MADEUP_ERROR}); off by > {MADEUP_ERROR}: {w.mean():.2%}")
    print(f"wrote {args.picture}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["sr3-face-8x"])
    parser.add_argument("--k", type=int, default=4, help="samples per image (default 4)")
    parser.add_argument("--budget", type=float, default=900, help="seconds per model; images after it are left out")
    parser.add_argument("--limit", type=int, help="only the first N images (a quick check)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=str(HERE / "results" / "madeup_calibration.json"))
    parser.add_argument("--raw", help="an .npz path with {name}: save the maps there, or recompute from them if it exists")
    parser.add_argument("--write-config", action="store_true", help="store the chosen threshold in config.json")
    parser.add_argument("--picture", help="only draw the report of --faces of the first --models to this PNG")
    parser.add_argument("--faces", type=int, nargs="+", default=[0, 1, 2, 3], help="val image indices for --picture")
    args = parser.parse_args()
    if args.k < 2:
        parser.error("--k must be at least 2 (the std of the samples)")
    require(*(MODELS[name][0] for name in args.models))
    torch.set_num_threads(args.threads)
    if args.picture:
        draw_picture(args.models[0], args)
        return 0
    out = Path(args.json)
    data = json.loads(out.read_text()) if out.exists() else {"models": {}}
    for name in args.models:
        result = run_model(name, args)
        data["models"][name] = result
        data.update(device=f"CPU, fp32, {args.threads} thread(s)", torch=torch.__version__)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(out)
        chosen, check = result["chosen"], result["held_out_check"]
        if chosen is None:
            print(f"{name}: no threshold reaches precision {MADEUP_PRECISION} on {result['images']} images")
            continue
        print(f"{name}: {result['images']} images, threshold {chosen['threshold']}: precision {chosen['precision']:.3f},"
              f" coverage {chosen['coverage']:.4f}, recall {chosen['recall']:.3f}; held out: {check}")
        if args.write_config:
            write_config(name, chosen["threshold"], result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
