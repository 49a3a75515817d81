"""Step-count diagnostic: PSNR, SSIM, consistency and KID of one sampler at 2, 5, 10, 20 and 50 steps, with and
without the consistency projection, on a whole validation set (issue 16 item 4).

A well-trained SR3 gets better (or stays level) with more steps; a model whose KID rises with the step count has
under-trained low noise levels, which only the many-step runs visit often. Rows are merged into the JSON as they
are measured (resumable), tied to the weights' sha256.

    python benchmarks/step_diagnostic.py sr3-face-8x --threads 1
    python benchmarks/step_diagnostic.py sr3-64-256 --steps 2 5 10 20 --consistency every
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from sr3infer import Upscaler
from sr3infer.hub import resolve_model_files
from sr3infer.imageio import write_atomically
from sr3infer.manifest import sha256_file
from sr3infer.train.evaluate import evaluate, load_eval_set, reference_features

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "datasets"
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
    parser.add_argument("--out", type=Path, help="JSON (default benchmarks/results/step_diagnostic_<model>.json)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = args.out or HERE / "results" / f"step_diagnostic_{args.model}.json"
    source = args.model_path or args.model
    sha = sha256_file(resolve_model_files(source)[1])
    result = json.loads(out.read_text()) if out.exists() else {}
    if result.get("weights_sha256") not in (None, sha):
        raise SystemExit(f"{out} was measured on other weights; move it away or pass another --out.")
    data, protocol, reference_dirs = DOMAINS[args.model]
    upscaler = Upscaler.from_pretrained(source, device="cpu")
    images = load_eval_set(data, protocol, upscaler.config.out_size)
    reference = reference_features(reference_dirs, protocol, upscaler.config.out_size)
    result.update(what=__doc__.splitlines()[0], model=args.model, weights_sha256=sha,
                  data=str(data).replace(str(HERE.parent.parent), ".."), protocol=protocol, images=len(images),
                  seed=args.seed, dtype=str(upscaler.dtype), threads=args.threads)
    rows = result.setdefault("rows", {})
    for mode in args.consistency:
        for steps in args.steps:
            name = f"{args.sampler}|{steps}|{args.spacing}|{mode}"
            if name in rows:
                continue
            started = time.time()
            scores = evaluate(upscaler, images, batch_size=args.batch_size, seed=args.seed, reference=reference,
                              sampler=args.sampler, num_steps=steps, spacing=args.spacing, consistency=mode)
            scores.pop("outputs")
            rows[name] = {"sampler": args.sampler, "num_steps": steps, "spacing": args.spacing, "consistency": mode,
                          **scores, "seconds_per_image": round((time.time() - started) / len(images), 3)}
            write_atomically(out, lambda f: f.write((json.dumps(result, indent=1) + "\n").encode()), overwrite=True)
            m = scores["model"]
            print(f"{name:34s} PSNR {m['psnr']:.2f} SSIM {m['ssim']:.3f} cons {m['consistency_1e5']:.4f}e-5 "
                  f"KID {m.get('kid_1e3', float('nan')):.1f}e-3  [{time.time() - started:.0f} s]", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
