"""A photo model on the clean val and every kind of the degraded val, beside bicubic of the same inputs.

    python benchmarks/degraded_val.py sr3-64-256 --recipe fidelity --recipe realism
    python benchmarks/degraded_val.py runs/sr3-real-x4/export --recipe ddim1:none --recipe ancestral5x4:none

A recipe is a preset name or `SAMPLER STEPS [xK] [+flips] [:CONSISTENCY]` written as e.g. `ancestral5x4:none`,
`ddim1:every`, `ddim2x4+flips:none` (`+flips`: the K samples in four flipped orientations, `Recipe.ensemble`).
The degraded kinds are `sr3infer.train.degrade.VAL_KINDS` (fixed seed per kind); KID is against the natural
train + val photos. Rows are merged into the JSON (default benchmarks/results/<model>/degraded_val.json) as each
is measured, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import torch

from sr3infer import Upscaler
from sr3infer.hub.manifest import sha256_file
from sr3infer.hub.fetch import resolve_model_files
from sr3infer.train.degrade import VAL_KINDS
from sr3infer.train.evaluate import evaluate, load_eval_set, reference_features

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "datasets" / "natural"
RECIPE = re.compile(r"(?P<sampler>[a-z_0-9]+?)(?P<steps>\d+)(x(?P<k>\d+))?(?P<flips>\+flips)?"
                    r"(:(?P<consistency>none|final|every))?$")


def recipe_settings(text: str) -> dict:
    """`fidelity` -> {"preset": "fidelity"}; `ancestral5x4:none` -> sampler, steps, samples and consistency."""
    if text in ("fidelity", "realism"):
        return {"preset": text}
    m = RECIPE.match(text)
    if not m:
        raise SystemExit(f"degraded_val.py: recipe {text!r} is not a preset or SAMPLER STEPS[xK][+flips][:CONSISTENCY] "
                         "(e.g. ddim1:none, ancestral5x4:every)")
    settings = {"sampler": m["sampler"], "num_steps": int(m["steps"]), "num_samples": int(m["k"] or 1),
                "spacing": "linear" if m["steps"] == "1" else "quadratic"}
    if m["consistency"]:
        settings["consistency"] = m["consistency"]
    if m["flips"]:
        settings["ensemble"] = "flips"
    return settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--recipe", action="append", required=True)
    parser.add_argument("--kinds", nargs="+", default=["clean", *VAL_KINDS], choices=["clean", *VAL_KINDS])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for folder in (SHARED / "val", SHARED / "train"):
        if not folder.is_dir():
            print(f"degraded_val.py: {folder} is missing; it needs the shared datasets beside the checkout "
                  "(../shared/datasets, see scripts/prepare_datasets.py)", file=sys.stderr)
            return 1
    torch.set_num_threads(args.threads)
    name = Path(args.model).name if Path(args.model).exists() else args.model
    out = args.json or HERE / "results" / name / "degraded_val.json"
    rows = json.loads(out.read_text()) if out.is_file() else {}
    sha = sha256_file(resolve_model_files(args.model)[1])  # each row names the weights it measured
    other = sorted({row["weights_sha256"][:12] for row in rows.values() if row.get("weights_sha256", sha) != sha})
    if other:
        print(f"degraded_val.py: {out} holds rows of other weights ({', '.join(other)}...), these are {sha[:12]}...; "
              "pass another --json", file=sys.stderr)
        return 1
    upscaler = Upscaler.from_pretrained(args.model, device="cpu")
    images = load_eval_set(SHARED / "val", "natural", upscaler.config.out_size)
    reference = reference_features([SHARED / "train", SHARED / "val"], "natural", upscaler.config.out_size)
    for text in args.recipe:
        for kind in args.kinds:
            key = f"{text}|{kind}"
            if key in rows:
                continue
            result = evaluate(upscaler, images, seed=args.seed, reference=reference, progress=False,
                              degradation=None if kind == "clean" else kind, **recipe_settings(text))
            result.pop("outputs")
            rows[key] = {"recipe": text, "kind": kind, "settings": recipe_settings(text), "weights_sha256": sha, **result}
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(rows, indent=1) + "\n")
            model, bic = result["model"], result["bicubic"]
            print(f"{text:>18} {kind:>8}: PSNR {model['psnr']:.2f} (bicubic {bic['psnr']:.2f}), SSIM {model['ssim']:.3f} "
                  f"({bic['ssim']:.3f}), KID {model.get('kid_1e3', float('nan')):.1f} ({bic.get('kid_1e3', float('nan')):.1f}), "
                  f"{result['seconds']} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
