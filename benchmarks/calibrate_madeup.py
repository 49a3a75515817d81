"""Calibrate the fidelity report's made-up mask: the per-pixel std threshold above which the error exceeds 0.1 at
least half the time, on validation images.

    nice -n 10 python benchmarks/calibrate_madeup.py --models sr3-face-8x --budget 900
    nice -n 10 python benchmarks/calibrate_madeup.py --models sr3-64-256 --budget 900
    python benchmarks/calibrate_madeup.py --limit 2 --json /tmp/m.json          # a quick check

For each model (sr3-face-8x on CelebA val, protocol faces; sr3-64-256 on the natural val crops), images are
upscaled one by one with the model's default recipe and K samples (default 4; sample k of image i uses seed
i * K + k) until the time budget is spent. Per pixel: the std of the K samples (mean over channels, [0, 1]
units, as `return_uncertainty`) and the |error| of the output (the projected mean of the K samples) against the
original (mean over channels). The curve gives, per threshold t, the precision P(|error| > 0.1 | std > t), the
coverage (share of pixels with std > t) and the recall; the chosen threshold is
`sr3infer.report.choose_threshold`'s (lowest t with precision >= 0.5 there and above). A split check picks the
threshold on the even-numbered images and states its precision on the odd ones. Each model is merged into
benchmarks/results/madeup_calibration.json; write the threshold into the model's config.json
(`report.madeup_std_threshold`) by hand or with --write-config.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sr3infer import Upscaler
from sr3infer.report import MADEUP_ERROR, MADEUP_PRECISION, calibration_curve, choose_threshold
from sr3infer.train.data import make_lowres
from sr3infer.train.evaluate import load_eval_set

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "datasets"
MODELS = {"sr3-face-8x": (SHARED / "celeba" / "val", "faces"), "sr3-64-256": (SHARED / "natural" / "val", "natural")}
THRESHOLDS = np.round(np.arange(0.0025, 0.2001, 0.0025), 4)
MIN_PIXELS = 100  # a threshold with fewer pixels above it says nothing about precision


def upscale_with_map(upscaler: Upscaler, lowres: torch.Tensor, k: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """The output (1, 3, H, W) in [0, 1] and the (H, W) std map of K samples of one (1, 3, h, w) input in [0, 1]."""
    out = upscaler.upscale(lowres, num_samples=k, seed=seed, output_type="pt", progress=False,
                           return_uncertainty=True, batch_size=k)
    if isinstance(out, tuple):  # the tuple API; an output object has .images and .uncertainty
        images, maps = out
    else:
        images, maps = out.images, out.uncertainty
    maps = np.asarray(maps, dtype=np.float32)
    return torch.as_tensor(images).float().reshape(1, 3, *maps.shape[-2:]), maps.reshape(maps.shape[-2:])


def run_model(name: str, args: argparse.Namespace) -> dict[str, Any]:
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
    std_all, err_all = np.stack(stds), np.stack(errors)
    curve = calibration_curve(std_all, err_all, THRESHOLDS)
    chosen = choose_threshold(curve, min_pixels=MIN_PIXELS)
    even = choose_threshold(calibration_curve(std_all[0::2], err_all[0::2], THRESHOLDS), min_pixels=MIN_PIXELS)
    held_out = None
    if even is not None and len(stds) > 1:
        (row,) = calibration_curve(std_all[1::2], err_all[1::2], [even["threshold"]])
        held_out = {"threshold_from_even_images": even["threshold"], "precision_on_odd_images": row["precision"],
                    "coverage_on_odd_images": row["coverage"], "pixels_on_odd_images": row["pixels"]}
    return {
        "model": name, "data": str(data.relative_to(SHARED.parent.parent)), "protocol": protocol,
        "images": len(stds), "images_available": len(hr), "budget_s": args.budget, "k": args.k,
        "recipe": vars(upscaler.config.sampling), "seed": args.seed,
        "seconds_per_image": float(np.mean(seconds)), "pixels": int(std_all.size),
        "share_error_above": float((err_all > MADEUP_ERROR).mean()), "mean_std": float(std_all.mean()),
        "error_level": MADEUP_ERROR, "precision_target": MADEUP_PRECISION, "min_pixels": MIN_PIXELS,
        "chosen": chosen, "held_out_check": held_out, "curve": curve,
        "command": "python benchmarks/calibrate_madeup.py " + " ".join(sys.argv[1:]),
    }


def write_config(name: str, threshold: float, result: dict[str, Any]) -> None:
    """Store the threshold (and where it comes from) under "report" in the bundled config.json."""
    from sr3infer.manifest import load_manifest

    path = load_manifest().bundled_dir(name) / "config.json"
    config = json.loads(path.read_text())
    config["report"] = {"madeup_std_threshold": threshold, "madeup_precision": round(result["chosen"]["precision"], 4),
                        "calibration": f"benchmarks/calibrate_madeup.py: {result['images']} {result['protocol']} val "
                                       f"images, K={result['k']}"}
    path.write_text(json.dumps(config, indent=2) + "\n")
    print(f"wrote report.madeup_std_threshold = {threshold} into {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["sr3-face-8x"])
    parser.add_argument("--k", type=int, default=4, help="samples per image (default 4)")
    parser.add_argument("--budget", type=float, default=900, help="seconds per model; images after it are left out")
    parser.add_argument("--limit", type=int, help="only the first N images (a quick check)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=str(HERE / "results" / "madeup_calibration.json"))
    parser.add_argument("--write-config", action="store_true", help="store the chosen threshold in config.json")
    args = parser.parse_args()
    if args.k < 2:
        parser.error("--k must be at least 2 (the std of the samples)")
    torch.set_num_threads(args.threads)
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
