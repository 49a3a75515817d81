"""Upscale a photo of any size 4x with `sr3-64-256`, by overlapping tiles blended at every denoising step.

The model was trained on 64x64 -> 256x256; larger outputs are denoised as 256x256 tiles that share
each step's noise level and are averaged with a smooth window where they overlap, so no seams appear.

    python examples/upscale_photo.py                          # the committed examples/photo_64.png, 64 -> 256
    python examples/upscale_photo.py my_photo.jpg             # your own photo, upscaled 4x as it is
    python examples/upscale_photo.py big.jpg --downscale 4    # shrink it 4x first, to compare with the original
    python examples/upscale_photo.py --model runs/sr3-64-256/export --steps 10

Writes the upscaled PNG and a side-by-side comparison (input | bicubic | SR3 | original) next to it, into
examples/out/ (ignored by git) unless -o names another place.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from PIL import Image, ImageDraw

from sr3infer import SAMPLERS, Upscaler

HERE = Path(__file__).resolve().parent
DEFAULT_PHOTO = HERE / "photo_64.png"  # committed: scikit-image's chelsea, a quadrant downscaled 4x (see README.md)
OUT = HERE / "out"  # where the examples write by default; ignored by git, so a run leaves the checkout clean


def side_by_side(panels: list[tuple[str, Image.Image]], size: tuple[int, int]) -> Image.Image:
    """Panels resized (nearest) to `size`, left to right, each with its title above."""
    label_h, gap = 16, 4
    width, height = size
    canvas = Image.new("RGB", (len(panels) * (width + gap) - gap, height + label_h), "white")
    draw = ImageDraw.Draw(canvas)
    for k, (title, image) in enumerate(panels):
        x = k * (width + gap)
        draw.text((x + 4, 2), title, fill="black")
        canvas.paste(image.convert("RGB").resize(size, Image.Resampling.NEAREST), (x, label_h))
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", nargs="?", default=str(DEFAULT_PHOTO),
                        help="photo to upscale (default: the committed examples/photo_64.png)")
    parser.add_argument("--model", default="sr3-64-256", help="model name or folder (default sr3-64-256)")
    parser.add_argument("--steps", type=int, help="denoising steps (default: the model's measured default)")
    parser.add_argument("--sampler", choices=sorted(SAMPLERS), help="default: the model's")
    parser.add_argument("--downscale", type=int,
                        help="shrink the photo by this factor first, to compare with the original (default 1)")
    parser.add_argument("--tile", type=int, help="tile side in output pixels (default: the model's 256)")
    parser.add_argument("--tile-overlap", type=int, help="tile overlap in output pixels (default: a quarter tile)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", default=str(OUT / "upscale_photo.png"),
                        help="upscaled PNG (default examples/out/upscale_photo.png); the comparison goes beside "
                             "it as <name>_comparison.png")
    args = parser.parse_args()

    if not Path(args.image).is_file():
        raise SystemExit(f"{args.image} is not a file; pass the photo to upscale: python {Path(__file__).name} PHOTO")
    photo = Image.open(args.image).convert("RGB")
    factor = args.downscale or 1
    if factor > 1:
        # The stand-in for a small photo: bicubic downsampling, as in the model's training data.
        photo = photo.crop((0, 0, photo.width // factor * factor, photo.height // factor * factor))
        lowres = photo.resize((photo.width // factor, photo.height // factor), Image.Resampling.BICUBIC)
    else:
        lowres = photo
    upscaler = Upscaler.from_pretrained(args.model, device="cpu")
    scale = upscaler.config.scale
    out_size = (lowres.height * scale, lowres.width * scale)
    plan = upscaler.tile_plan(out_size, args.tile, args.tile_overlap)
    tiles = "one piece" if plan is None else f"{plan[0]}px tiles overlapping by >= {plan[1]}px"
    steps = f"{args.steps} steps" if args.steps else "the model's default recipe"
    print(f"{args.image}: {lowres.width}x{lowres.height} -> {out_size[1]}x{out_size[0]} ({tiles}), {steps}")

    started = time.perf_counter()
    result = upscaler.upscale(lowres, num_steps=args.steps, sampler=args.sampler, seed=args.seed,
                              tile_size=args.tile, tile_overlap=args.tile_overlap)
    print(f"upscaled in {time.perf_counter() - started:.0f} s")

    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    result.save(output)
    panels = [(f"input {lowres.width}x{lowres.height}", lowres),
              ("bicubic", lowres.resize(result.size, Image.Resampling.BICUBIC)),
              (f"SR3 x{scale}", result)]
    if factor > 1:
        panels.append(("original", photo))
    comparison = output.with_name(output.stem + "_comparison.png")
    side_by_side(panels, result.size).save(comparison)
    print(f"wrote {output} and {comparison}")


if __name__ == "__main__":
    main()
