"""Quality vs steps: PSNR / SSIM / consistency (and optionally FID) per sampler and recipe on the face validation set.

    python benchmarks/sampling_quality.py --model sr3-face-8x --limit 16 --steps 5 10 20 50 100 250
    python benchmarks/sampling_quality.py --recipes          # the sampling levers of issue 4, side by side

Writes benchmarks/results/sampling_quality.json (merged with earlier runs by key) and a PNG plot.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from sr3infer import Upscaler
from sr3infer.train.evaluate import evaluate, load_eval_set

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "datasets" / "celeba" / "val"

RECIPES = {
    # name: (start_noise_level, consistency)
    "plain": (None, "none"),
    "final-projection": (None, "final"),
    "every-projection": (None, "every"),
    "truncated-0.29": (0.29, "none"),
    "truncated-0.29+final": (0.29, "final"),
    "truncated-0.29+every": (0.29, "every"),
    "truncated-0.5+final": (0.5, "final"),
}


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    upscaler = Upscaler.from_pretrained(args.model, device="cpu")
    images = load_eval_set(args.data, args.protocol, upscaler.config.out_size, args.limit)
    results = {}
    if args.recipes:
        combos = [(s, args.recipe_steps, r) for s in args.samplers for r in RECIPES]
    else:
        combos = [(s, n, args.recipe) for s in args.samplers for n in args.steps]
    for sampler, steps, recipe in combos:
        start, consistency = RECIPES[recipe]
        if start is not None and steps > upscaler.config.schedule.num_steps:
            continue
        t = time.time()
        try:
            r = evaluate(upscaler, images, batch_size=args.batch_size, seed=args.seed, fid=args.fid, sampler=sampler,
                         num_steps=steps, start_noise_level=start, consistency=consistency, spacing=args.spacing)
        except ValueError as err:
            print(f"skip {sampler} {steps} {recipe}: {err}")
            continue
        r.pop("outputs")
        key = f"{sampler}|{steps}|{recipe}|{args.spacing}"
        results[key] = {"sampler": sampler, "steps": steps, "recipe": recipe, "spacing": args.spacing, **r}
        m, b = r["model"], r["bicubic"]
        print(f"{sampler:9s} {steps:5d} {recipe:22s} PSNR {m['psnr']:.2f} (bic {b['psnr']:.2f})  SSIM {m['ssim']:.3f} "
              f"({b['ssim']:.3f})  cons {m['consistency_1e5']:.2f}e-5 ({b['consistency_1e5']:.1f})"
              + (f"  FID {m['fid']:.1f} ({b['fid']:.1f})" if "fid" in m else "") + f"  [{time.time() - t:.0f} s]", flush=True)
    return results


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    groups: dict[tuple, list] = {}
    for r in results.values():
        groups.setdefault((r["sampler"], r["recipe"], r.get("spacing", "linear")), []).append(r)
    for (sampler, recipe, spacing), rows in sorted(groups.items()):
        rows.sort(key=lambda r: r["steps"])
        if len(rows) < 2:
            continue
        steps = [r["steps"] for r in rows]
        for ax, metric in zip(axes, ("psnr", "ssim", "consistency_1e5")):
            ax.plot(steps, [r["model"][metric] for r in rows], marker="o", label=f"{sampler} / {recipe}")
    any_row = next(iter(results.values()))
    for ax, metric in zip(axes, ("psnr", "ssim", "consistency_1e5")):
        ax.axhline(any_row["bicubic"][metric], color="gray", linestyle="--", label="bicubic")
        ax.set_xscale("log")
        ax.set_xlabel("steps")
        ax.set_title(metric)
    axes[2].set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sr3-face-8x")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--protocol", default="faces")
    parser.add_argument("--limit", type=int, default=16)
    parser.add_argument("--samplers", nargs="+", default=["ancestral", "ddim", "dpmpp_2m"])
    parser.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20, 50, 100, 250])
    parser.add_argument("--recipe", default="plain", choices=sorted(RECIPES))
    parser.add_argument("--recipes", action="store_true", help="compare all recipes at --recipe-steps")
    parser.add_argument("--recipe-steps", type=int, default=10)
    parser.add_argument("--spacing", default="linear")
    parser.add_argument("--fid", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(HERE / "results" / "sampling_quality.json"))
    args = parser.parse_args()
    results = run(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(out.read_text()) if out.exists() else {"runs": {}}
    previous["device"] = platform.processor() or platform.machine()
    previous["model"] = args.model
    previous["images"] = args.limit
    previous["runs"].update(results)
    out.write_text(json.dumps(previous, indent=2) + "\n")
    plot(previous["runs"], out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
