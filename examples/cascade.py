"""Cascaded generation: 64x64 samples of a base generator -> SR3 64->256 (-> 1024 with a second stage).

By default the "generator samples" are val photos downscaled to 64x64 (in a clone without
../shared/datasets, the committed examples/photo_64.png and its mirror images), so the example needs
no download; pass --diffusers MODEL_ID to use a real unconditional `diffusers` pipeline instead.

    python examples/cascade.py                                   # 4 samples, one 64->256 stage
    python examples/cascade.py --model runs/sr3-64-256/export --steps 10
    python examples/cascade.py --stages 2 --noise-level 0.02     # 64 -> 256 -> 1024 (the second stage tiles)
    pip install diffusers && python examples/cascade.py --diffusers google/ddpm-cifar10-32

Writes a grid: one row per sample, columns base sample | bicubic x4 | each SR3 stage (shown at 256 px), and the
final images beside it, into examples/out/ (ignored by git) unless -o names another place.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageOps

from sr3infer import SAMPLERS, Cascade

HERE = Path(__file__).resolve().parent
VAL_PHOTOS = HERE.parent.parent / "shared" / "datasets" / "natural" / "val"
COMMITTED_PHOTO = HERE / "photo_64.png"
OUT = HERE / "out"  # where the examples write by default; ignored by git, so a run leaves the checkout clean


def photo_samples(count: int, size: int = 64) -> list[Image.Image]:
    """Stand-ins for a base generator's samples: val photos, centre-cropped square and downscaled to `size`.

    A real cascade would take these from an unconditional 64x64 generator (see `diffusers_samples`).
    """
    paths = sorted(p for p in VAL_PHOTOS.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")) \
        if VAL_PHOTOS.is_dir() else []
    if not paths:
        print(f"note: no photos in {VAL_PHOTOS}; using the committed {COMMITTED_PHOTO.name} and its mirror images")
        photo = Image.open(COMMITTED_PHOTO).convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
        flips = [photo, ImageOps.mirror(photo), ImageOps.flip(photo), ImageOps.flip(ImageOps.mirror(photo))]
        return (flips * count)[:count]
    samples = []
    for path in (paths * count)[:count]:
        image = Image.open(path).convert("RGB")
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        samples.append(image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BICUBIC))
    return samples


def diffusers_samples(model_id: str, seed: int, steps: int | None = None):
    """An unconditional `diffusers` pipeline as the base generator: a callable `count -> images` for Cascade.

    Optional: needs `pip install diffusers` and the Hub (or a local pipeline folder). Any pipeline
    whose call takes batch_size / generator / output_type works, e.g. DDPMPipeline checkpoints such
    as google/ddpm-cifar10-32 (32x32 samples: the stage then warns that it was trained on 64x64).
    """
    try:
        from diffusers import DiffusionPipeline
    except ImportError:
        raise SystemExit("--diffusers needs the diffusers package: pip install diffusers") from None
    pipe = DiffusionPipeline.from_pretrained(model_id)

    def generate(count: int):
        generator = torch.Generator().manual_seed(seed)
        extra = {} if steps is None else {"num_inference_steps": steps}
        # output_type="np": (N, H, W, 3) floats in [0, 1], which Cascade reads with value_range=(0, 1).
        return pipe(batch_size=count, generator=generator, output_type="np", **extra).images

    return generate


def grid(columns: list[tuple[str, list[Image.Image]]], cell: int) -> Image.Image:
    label_h = 16
    rows = len(columns[0][1])
    canvas = Image.new("RGB", (cell * len(columns), cell * rows + label_h), "white")
    draw = ImageDraw.Draw(canvas)
    for c, (title, images) in enumerate(columns):
        draw.text((c * cell + 4, 2), title, fill="black")
        for r, image in enumerate(images):
            canvas.paste(image.resize((cell, cell), Image.Resampling.NEAREST if image.width < cell
                                      else Image.Resampling.LANCZOS), (c * cell, label_h + r * cell))
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sr3-64-256", help="model name or folder for every stage (default sr3-64-256)")
    parser.add_argument("--stages", type=int, default=1, help="how many 4x stages (1: 64->256, 2: ->1024, slow on CPU)")
    parser.add_argument("--steps", type=int, help="denoising steps per stage (default: the model's)")
    parser.add_argument("--sampler", choices=sorted(SAMPLERS), help="default: the model's")
    parser.add_argument("--noise-level", type=float, default=0.0,
                        help="conditioning augmentation: noise std added to each stage's input, in [-1, 1] units")
    parser.add_argument("--count", type=int, default=4, help="number of samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--diffusers", metavar="MODEL_ID", help="use this diffusers pipeline as the base generator")
    parser.add_argument("--base-steps", type=int, help="the diffusers pipeline's num_inference_steps (default: its own)")
    parser.add_argument("-o", "--output", default=str(OUT / "cascade.png"),
                        help="the grid (default examples/out/cascade.png); the final images go beside it as "
                             "<name>_<k>.png")
    args = parser.parse_args()

    cascade = Cascade.from_pretrained([args.model] * args.stages, device="cpu")
    if args.diffusers:
        # Cascade also takes the callable itself: cascade(generate, count=4, value_range=(0, 1)).
        # Here the batch is made first so that the grid can show it.
        generate = diffusers_samples(args.diffusers, args.seed, args.base_steps)
        generated = generate(args.count)  # (N, H, W, 3) float in [0, 1]
        samples = [Image.fromarray((a * 255).round().clip(0, 255).astype("uint8")) for a in generated]
    else:
        samples = photo_samples(args.count)  # stand-ins for generator samples (no download needed)

    started = time.perf_counter()
    stages = cascade(samples, num_steps=args.steps, sampler=args.sampler, noise_level=args.noise_level,
                     seed=args.seed, return_all_stages=True, output_type="pil")
    print(f"{args.count} samples through {args.stages} stage(s) in {time.perf_counter() - started:.0f} s")

    cell = 256
    scale = cascade.upscalers[0].config.scale
    columns = [("base sample", samples),
               (f"bicubic x{scale}", [s.resize((s.width * scale, s.height * scale), Image.Resampling.BICUBIC)
                                       for s in samples])]
    for k, images in enumerate(stages):
        columns.append((f"SR3 stage {k + 1} ({images[0].width}px)", images))
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    grid(columns, cell).save(output)
    for k, image in enumerate(stages[-1]):
        image.save(output.with_name(f"{output.stem}_{k}.png"))
    print(f"wrote {output} and {len(stages[-1])} final images {output.stem}_<k>.png")


if __name__ == "__main__":
    main()
