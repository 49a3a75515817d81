"""Training throughput of both recipes under fp32 eager, bf16 autocast, channels_last, torch.compile and 1 vs 2 threads.

Every variant starts from the same bundled weights with the same seed, so it sees the same batches and the same
noise: the loss curves may differ only by arithmetic. A variant "keeps the loss curve" when the mean of its
per-step losses differs from fp32 eager's by less than twice the standard error of the per-step differences
(paired over the same steps). Throughput is training images (patches on a patch recipe) per core-second:
batch x timed steps / (threads x seconds), timed after the warm-up steps (a compiled variant's compile time is
reported apart). Variants run one after another in one process, in one run, so their ratios compare.

    python benchmarks/train_throughput.py --loss-steps 200 --json benchmarks/results/train_throughput.json
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch

from sr3infer.train.loop import TrainConfig, setup, train_step, training_network

RECIPES = {"sr3-64-256": "training/sr3-64-256.json", "sr3-face-8x": "training/sr3-face-8x.json"}
# name: (autocast, channels_last, compile, threads)
VARIANTS = {
    "fp32 eager": ("none", False, False, 2),
    "bf16 autocast": ("bf16", False, False, 2),
    "bf16 + channels_last": ("bf16", True, False, 2),
    "bf16 + channels_last + compile": ("bf16", True, True, 2),
    "bf16 + channels_last, 1 thread": ("bf16", True, False, 1),
}


def run_variant(recipe: str, variant: str, steps: int, warmup: int, out_dir: str) -> dict:
    """Train `steps` steps of one variant from the bundled weights; per-step losses and the timed throughput."""
    autocast, channels_last, compiled, threads = VARIANTS[variant]
    raw = json.loads(Path(RECIPES[recipe]).read_text())
    raw.update({"autocast": autocast, "channels_last": channels_last, "compile": compiled, "threads": threads,
                "init_from": f"sr3infer/bundled/{recipe}", "out_dir": out_dir, "seed": 0, "warmup_steps": 50})
    cfg = TrainConfig(**raw)
    run = setup(cfg)
    net = training_network(run)
    losses, started = [], time.perf_counter()
    first_steps_seconds, timed_from = 0.0, started
    for i in range(steps):
        losses.append(train_step(run, net)["loss"])
        if i + 1 == warmup:
            first_steps_seconds = time.perf_counter() - started
            timed_from = time.perf_counter()
    seconds = time.perf_counter() - timed_from
    timed = steps - warmup
    return {
        "recipe": recipe, "variant": variant, "autocast": autocast, "channels_last": channels_last,
        "compile": compiled, "threads": threads, "batch_size": cfg.batch_size, "patch_size": cfg.patch_size,
        "warmup_steps": warmup, "warmup_seconds": round(first_steps_seconds, 2), "timed_steps": timed,
        "timed_seconds": round(seconds, 2),
        "images_per_core_second": round(cfg.batch_size * timed / (threads * seconds), 3),
        "images_per_second": round(cfg.batch_size * timed / seconds, 3),
        "losses": [round(x, 6) for x in losses],
    }


def compare_losses(row: dict, baseline: dict) -> dict:
    """Paired mean difference of per-step losses against the baseline and whether it is within 2 standard errors."""
    diffs = [a - b for a, b in zip(row["losses"], baseline["losses"])]
    mean = statistics.fmean(diffs)
    se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else float("inf")
    return {"mean_loss": round(statistics.fmean(row["losses"]), 5), "loss_diff_vs_fp32": round(mean, 6),
            "loss_diff_se": round(se, 6), "keeps_loss_curve": abs(mean) < 2 * se or row is baseline}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--loss-steps", type=int, default=200, help="steps per variant (the loss-curve window)")
    parser.add_argument("--warmup", type=int, default=10, help="steps before timing starts (compile happens here)")
    parser.add_argument("--json", default="benchmarks/results/train_throughput.json")
    args = parser.parse_args(argv)
    if args.loss_steps <= args.warmup + 1:
        parser.error(f"--loss-steps must exceed --warmup + 1, got {args.loss_steps} and {args.warmup}")

    rows = []
    with tempfile.TemporaryDirectory() as out_dir:
        for recipe in args.recipes:
            recipe_rows = [run_variant(recipe, v, args.loss_steps, args.warmup, out_dir) for v in args.variants]
            baseline = next((r for r in recipe_rows if r["variant"] == "fp32 eager"), recipe_rows[0])
            for row in recipe_rows:
                row.update(compare_losses(row, baseline))
                row["speedup_vs_baseline_per_core"] = round(
                    row["images_per_core_second"] / baseline["images_per_core_second"], 2)
            rows += recipe_rows

    print(f"{'recipe':12} {'variant':34} {'img/core-s':>10} {'x fp32':>7} {'mean loss':>9} {'diff':>9} {'2se':>8} keeps")
    for r in rows:
        print(f"{r['recipe']:12} {r['variant']:34} {r['images_per_core_second']:10.3f} "
              f"{r['speedup_vs_baseline_per_core']:7.2f} {r['mean_loss']:9.5f} {r['loss_diff_vs_fp32']:9.5f} "
              f"{2 * r['loss_diff_se']:8.5f} {r['keeps_loss_curve']}")
    result = {
        "what": __doc__.strip().splitlines()[0],
        "machine": f"{torch.get_num_threads()} torch threads available; torch {torch.__version__}; CPU shared "
                   "with other processes unless stated in the README",
        "loss_steps": args.loss_steps, "warmup_steps": args.warmup, "rows": rows,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
