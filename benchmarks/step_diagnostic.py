"""Step-count diagnostic: PSNR, SSIM, consistency and KID of one sampler at 2, 5, 10, 20 and 50 steps, with and
without the consistency projection, on a whole validation set (issue 16 item 4).

A well-trained SR3 gets better (or stays level) with more steps; a model whose KID rises with the step count has
under-trained low noise levels, which only the many-step runs visit often. Rows are merged into the JSON as they
are measured (resumable), tied to the weights' sha256.

    python benchmarks/step_diagnostic.py sr3-face-8x --threads 1
    python benchmarks/step_diagnostic.py sr3-64-256 --steps 2 5 10 20 --consistency every
    python benchmarks/step_diagnostic.py sr3-face-8x --reuse benchmarks/results/sr3-face-8x/preset_search.json

`--reuse` copies the rows a preset search already measured with the same computation (same weights sha256, seed,
image count, sampler, spacing, steps and consistency, one sample per image; `evaluate` seeds each image on its own,
so the batch size does not change the outputs) instead of running them again; the row names its source.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from sr3infer import Upscaler
from sr3infer.models.config import Recipe
from sr3infer.hub.fetch import resolve_model_files
from sr3infer.images.io import write_atomically
from sr3infer.hub.manifest import sha256_file
from sr3infer.train.evaluate import evaluate, load_eval_set, reference_features

from bench_data import DATASETS as SHARED, require  # a sibling module: run this file as a script

HERE = Path(__file__).resolve().parent
DOMAINS = {  # model -> (val data, protocol, reference folders for KID)
    "sr3-face-8x": (SHARED / "celeba" / "val", "faces", [SHARED / "celeba" / "train", SHARED / "celeba" / "val"]),
    "sr3-64-256": (SHARED / "natural" / "val", "natural", [SHARED / "natural" / "train", SHARED / "natural" / "val"]),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=sorted(DOMAINS))
    parser.add_argument("--model-path", help="measure this folder instead of the bundled model")
    parser.add_argument("--sampler", default="ancestral")
    parser.add_argument("--spacing", default="quadratic")
    parser.add_argument("--steps", type=int, nargs="+", default=[2, 5, 10, 20, 50])
    parser.add_argument("--consistency", nargs="+", default=["every", "none"])
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reuse", type=Path, help="a preset_search JSON whose matching rows are copied, not re-run")
    parser.add_argument("--out", type=Path, help="JSON (default benchmarks/results/<model>/step_diagnostic.json)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = args.out or HERE / "results" / args.model / "step_diagnostic.json"
    source = args.model_path or args.model
    sha = sha256_file(resolve_model_files(source)[1])
    result = json.loads(out.read_text()) if out.exists() else {}
    if result.get("weights_sha256") not in (None, sha):
        raise SystemExit(f"{out} was measured on other weights; move it away or pass another --out.")
    data, protocol, reference_dirs = DOMAINS[args.model]
    require(data, *reference_dirs)
    upscaler = Upscaler.from_pretrained(source, device="cpu")
    images = load_eval_set(data, protocol, upscaler.config.out_size)
    reference = reference_features(reference_dirs, protocol, upscaler.config.out_size)
    result.update(what=__doc__.splitlines()[0], model=args.model, weights_sha256=sha,
                  data=str(data).replace(str(HERE.parent.parent), ".."), protocol=protocol, images=len(images),
                  seed=args.seed, dtype=str(upscaler.dtype), threads=args.threads)
    rows = result.setdefault("rows", {})

    def save() -> None:
        write_atomically(out, lambda f: f.write((json.dumps(result, indent=1) + "\n").encode()), overwrite=True)

    measured = reusable_rows(args.reuse, sha, args.seed, len(images), args.sampler, args.spacing) if args.reuse else {}
    for mode in args.consistency:
        for steps in args.steps:
            name = f"{args.sampler}|{steps}|{args.spacing}|{mode}"
            if name in rows:
                continue
            if (steps, mode) in measured:
                rows[name] = measured[steps, mode]
                save()
                print(f"{name:34s} copied from {args.reuse}", flush=True)
                continue
            started = time.time()
            recipe = Recipe(sampler=args.sampler, num_steps=steps, spacing=args.spacing, consistency=mode)  # 1 sample
            scores = evaluate(upscaler, images, batch_size=args.batch_size, seed=args.seed, reference=reference,
                              recipe=recipe)
            scores.pop("outputs")
            rows[name] = {"sampler": args.sampler, "num_steps": steps, "spacing": args.spacing, "consistency": mode,
                          **scores, "seconds_per_image": round((time.time() - started) / len(images), 3)}
            save()
            m = scores["model"]
            print(f"{name:34s} PSNR {m['psnr']:.2f} SSIM {m['ssim']:.3f} cons {m['consistency_1e5']:.4f}e-5 "
                  f"KID {m.get('kid_1e3', float('nan')):.1f}e-3  [{time.time() - started:.0f} s]", flush=True)
    return 0


def reusable_rows(path: Path, sha: str, seed: int, images: int, sampler: str, spacing: str) -> dict[tuple[int, str], dict]:
    """(steps, consistency) -> diagnostic row, from the preset search rows at `path` that ran the same computation."""
    search = json.loads(path.read_text())
    if (search.get("weights_sha256"), search.get("seed"), search.get("images")) != (sha, seed, images):
        raise SystemExit(f"{path} was measured on other weights, seed or image count "
                         f"(sha256 {str(search.get('weights_sha256'))[:12]}..., seed {search.get('seed')}, "
                         f"{search.get('images')} images; here {sha[:12]}..., seed {seed}, {images} images); "
                         "drop --reuse to measure every row here.")
    found = {}
    for key, row in search["runs"].items():
        if (row["sampler"], row["spacing"], row.get("num_samples", 1)) != (sampler, spacing, 1) or "same_as" in row:
            continue
        if row["sampler"] == "ddim" and row.get("eta", 0.0) != 0.0:
            continue
        found[row["num_steps"], row["consistency"]] = {
            "sampler": sampler, "num_steps": row["num_steps"], "spacing": spacing, "consistency": row["consistency"],
            "bicubic": row["bicubic"], "model": row["model"], "images": row["images"], "seconds": row["seconds"],
            "seconds_per_image": row["seconds_per_image"],
            "copied_from": f"{path.name}: {key}"}
    return found


if __name__ == "__main__":
    raise SystemExit(main())
