"""Quality vs steps: PSNR / SSIM / consistency (and optionally FID) per sampler and recipe on the face validation set.

    python benchmarks/sampling_quality.py --limit 8 --steps 1 2 5 10 20 50 100 250 1000 2000
    python benchmarks/sampling_quality.py --limit 8 --search --steps 5 20   # gamma-grid spacing search at fixed budgets
    python benchmarks/sampling_quality.py --recipes                         # the sampling levers side by side
    python benchmarks/sampling_quality.py --report                          # table, plot and recommendation only

Each point is merged into benchmarks/results/<model>/sampling_quality.json (by key) as soon as it is measured, so
several runs can share the file; the PNG plot and the recommendation (the fewest steps within 0.2 dB PSNR
and 10% consistency of the 2000-step ancestral result) are rebuilt from the whole file.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import time
from pathlib import Path

import torch

from sr3infer import Upscaler
from sr3infer.train.evaluate import evaluate, load_eval_set
from bench_data import DATASETS as SHARED, require  # sibling modules: run this file as a script
from unet_speed import cpu_name

HERE = Path(__file__).resolve().parent
DATA = SHARED / "celeba" / "val"

RECIPES = {
    # name: (start_noise_level, consistency)
    "plain": (None, "none"),
    "final-projection": (None, "final"),
    "every-projection": (None, "every"),
    "truncated-0.29": (0.29, "none"),
    "truncated-0.29+final": (0.29, "final"),
    "truncated-0.29+every": (0.29, "every"),
    "truncated-0.5+final": (0.5, "final"),
    "truncated-0.5+every": (0.5, "every"),
}
SEARCH_SPACINGS = ("linear", "quadratic", "trailing")
SEARCH_RECIPES = ("every-projection", "truncated-0.5+every")


def run(args: argparse.Namespace, out: Path) -> None:
    torch.set_num_threads(args.threads)
    upscaler = Upscaler.from_pretrained(args.model, device="cpu")
    images = load_eval_set(args.data, args.protocol, upscaler.config.out_size, args.limit)
    if args.recipes:
        combos = [(s, args.recipe_steps, r, args.spacing) for s in args.samplers for r in RECIPES]
    elif args.search:
        combos = [(s, n, r, sp) for n in args.steps for s in args.samplers for r in SEARCH_RECIPES for sp in SEARCH_SPACINGS]
    else:
        combos = [(s, n, args.recipe, args.spacing) for n in args.steps for s in args.samplers]
    for sampler, steps, recipe, spacing in combos:
        key = f"{sampler}|{steps}|{recipe}|{spacing}"
        if args.skip_done and key in load(out)["runs"]:
            continue
        start, consistency = RECIPES[recipe]
        if start is not None and steps > upscaler.config.schedule.num_train_timesteps:
            continue
        t = time.time()
        try:
            r = evaluate(upscaler, images, batch_size=args.batch_size, seed=args.seed, fid=args.fid, sampler=sampler,
                         num_steps=steps, start_noise_level=start, consistency=consistency, spacing=spacing,
                         num_samples=1)
        except ValueError as err:
            print(f"skip {sampler} {steps} {recipe}: {err}")
            continue
        r.pop("outputs")
        row = {"sampler": sampler, "steps": steps, "recipe": recipe, "spacing": spacing, **r}
        update(out, key, row, model=args.model, images=args.limit, threads=args.threads)
        m, b = r["model"], r["bicubic"]
        print(f"{sampler:9s} {steps:5d} {recipe:22s} {spacing:9s} PSNR {m['psnr']:.2f} (bic {b['psnr']:.2f})  SSIM {m['ssim']:.3f} "
              f"({b['ssim']:.3f})  cons {m['consistency_1e5']:.4f}e-5 ({b['consistency_1e5']:.1f})"
              + (f"  FID {m['fid']:.1f} ({b['fid']:.1f})" if "fid" in m else "") + f"  [{time.time() - t:.0f} s]", flush=True)


def load(out: Path) -> dict:
    return json.loads(out.read_text()) if out.exists() else {"runs": {}}


def update(out: Path, key: str, row: dict, **meta) -> None:
    """Merge one measured point into the JSON file under an exclusive lock (other runs may share it)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = load(out)
        data.update({"device": f"CPU: {cpu_name()}, fp32", **meta})  # callers that run in another dtype say so in meta
        data["runs"][key] = row
        save(out, data)


def save(out: Path, data: dict) -> None:
    """Write atomically (temporary file, then rename): a reader never sees half a file."""
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(out)


def recommend(runs: dict, recipe: str, psnr_margin: float = 0.2, consistency_margin: float = 0.10) -> dict | None:
    """The fewest steps (any sampler, `recipe`) within `psnr_margin` dB and `consistency_margin` of 2000-step ancestral.
    """
    reference = next((r for r in runs.values() if r["sampler"] == "ancestral" and r["steps"] == 2000
                      and r["recipe"] == recipe), None)
    if reference is None:
        return None
    ref = reference["model"]
    ok = [r for r in runs.values() if r["recipe"] == recipe
          and r["model"]["psnr"] >= ref["psnr"] - psnr_margin
          and r["model"]["consistency_1e5"] <= ref["consistency_1e5"] * (1 + consistency_margin)]
    # Fewest steps; then the best PSNR (to 0.01 dB); then a deterministic sampler (at 1 step all three coincide).
    best = min(ok, key=lambda r: (r["steps"], -round(r["model"]["psnr"], 2), r["sampler"] != "ddim", r["sampler"]))
    return {"reference": {k: ref[k] for k in ("psnr", "ssim", "consistency_1e5")},
            "choice": {"sampler": best["sampler"], "steps": best["steps"], "spacing": best["spacing"], "recipe": recipe,
                       **{k: best["model"][k] for k in ("psnr", "ssim", "consistency_1e5")}},
            "rule": f"fewest steps with PSNR >= reference - {psnr_margin} dB and consistency <= reference x {1 + consistency_margin}"}


def curve_table(runs: dict, recipe: str, spacing: str) -> str:
    """Markdown: one row per step count, one "PSNR / SSIM" column per sampler."""
    samplers = sorted({r["sampler"] for r in runs.values()})
    steps = sorted({r["steps"] for r in runs.values() if r["recipe"] == recipe and r["spacing"] == spacing})
    lines = ["| steps | " + " | ".join(samplers) + " |", "|---:|" + "---|" * len(samplers)]
    for n in steps:
        cells = []
        for sampler in samplers:
            r = runs.get(f"{sampler}|{n}|{recipe}|{spacing}")
            cells.append(f"{r['model']['psnr']:.2f} / {r['model']['ssim']:.3f}" if r else "not run")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def search_table(runs: dict) -> str:
    """Markdown: the gamma-grid search, one row per (budget, sampler), one PSNR / SSIM column per grid."""
    grids = [(rec, sp) for rec in SEARCH_RECIPES for sp in SEARCH_SPACINGS]
    budgets = sorted({r["steps"] for r in runs.values() if r["recipe"] in SEARCH_RECIPES[1:]})
    header = ["start 1.0, " + sp if rec == SEARCH_RECIPES[0] else f"start {RECIPES[rec][0]}, {sp}" for rec, sp in grids]
    lines = ["| steps | sampler | " + " | ".join(header) + " |", "|---:|---|" + "---|" * len(grids)]
    for n in budgets:
        for sampler in sorted({r["sampler"] for r in runs.values()}):
            found = [runs.get(f"{sampler}|{n}|{rec}|{sp}") for rec, sp in grids]
            if not any(found):
                continue
            best = max((r["model"]["psnr"] for r in found if r), default=None)
            cells = ["-" if r is None else (f"**{r['model']['psnr']:.2f}**" if r["model"]["psnr"] == best
                                             else f"{r['model']['psnr']:.2f}") + f" / {r['model']['ssim']:.3f}"
                     for r in found]
            lines.append(f"| {n} | {sampler} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(data: dict, recipe: str, spacing: str) -> None:
    print(f"PSNR / SSIM, recipe {recipe}, {spacing} spacing:\n" + curve_table(data["runs"], recipe, spacing) + "\n")
    print("gamma-grid search, PSNR / SSIM (best per row in bold):\n" + search_table(data["runs"]) + "\n")
    rows = sorted(data["runs"].values(), key=lambda r: (r["recipe"], r["spacing"], r["sampler"], r["steps"]))
    print(f"| sampler | steps | recipe | spacing | PSNR | SSIM | consistency x1e-5 | s / {data.get('images')} images |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        m = r["model"]
        print(f"| {r['sampler']} | {r['steps']} | {r['recipe']} | {r['spacing']} | {m['psnr']:.2f} | {m['ssim']:.3f} "
              f"| {m['consistency_1e5']:.4f} | {r['seconds']} |")
    rec = recommend(data["runs"], recipe)
    data["recommendation"] = rec
    print("recommendation:", json.dumps(rec) if rec else "no 2000-step ancestral reference measured yet")


def plot(results: dict, path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    groups: dict[tuple, list] = {}
    for r in results.values():
        groups.setdefault((r["sampler"], r["recipe"], r.get("spacing", "linear")), []).append(r)
    curves = 0
    for (sampler, recipe, spacing), rows in sorted(groups.items()):
        rows.sort(key=lambda r: r["steps"])
        if len(rows) < 4:  # a curve, not a search point
            continue
        curves += 1
        steps = [r["steps"] for r in rows]
        for ax, metric in zip(axes, ("psnr", "ssim", "consistency_1e5")):
            ax.plot(steps, [r["model"][metric] for r in rows], marker="o", label=f"{sampler} / {recipe} / {spacing}")
    if not curves:  # nothing to draw (e.g. a file of single comparison points)
        plt.close(fig)
        return
    any_row = next(iter(results.values()))
    for ax, metric in zip(axes, ("psnr", "ssim", "consistency_1e5")):
        ax.axhline(any_row["bicubic"][metric], color="gray", linestyle="--", label="bicubic")
        ax.set_xscale("log")
        ax.set_xlabel("steps")
        ax.set_title(metric)
    axes[2].set_yscale("log")
    axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
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
    parser.add_argument("--recipe", default="every-projection", choices=sorted(RECIPES))
    parser.add_argument("--recipes", action="store_true", help="compare all recipes at --recipe-steps")
    parser.add_argument("--recipe-steps", type=int, default=10)
    parser.add_argument("--search", action="store_true",
                        help=f"gamma-grid search at each --steps budget: spacings {SEARCH_SPACINGS} x recipes {SEARCH_RECIPES}")
    parser.add_argument("--skip-done", action="store_true", help="skip points already in the JSON file")
    parser.add_argument("--report", action="store_true", help="only print the table, plot and recommend from the JSON file")
    parser.add_argument("--spacing", default="quadratic")
    parser.add_argument("--fid", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="JSON file (default benchmarks/results/<model>/sampling_quality.json)")
    args = parser.parse_args()
    out = Path(args.out or HERE / "results" / args.model / "sampling_quality.json")
    if not args.report:
        require(args.data)
        run(args, out)
    with open(out.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = load(out)
        report(data, args.recipe, args.spacing)
        save(out, data)
    plot(data["runs"], out.with_suffix(".png"),
         title=f"{data.get('model')}, {data.get('images')} validation images")
    print(f"wrote {out}" + (f" and {out.with_suffix('.png')}" if out.with_suffix(".png").exists() else ""))


if __name__ == "__main__":
    main()
