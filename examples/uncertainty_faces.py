"""Where did the model invent detail? input | ensemble output | uncertainty | |error|, one row per validation face.

    python examples/uncertainty_faces.py                  # bundled sr3-face-8x, K = 8 -> examples/out/uncertainty_faces.png
    python examples/uncertainty_faces.py --preset realism --samples 16 --count 4

The output is the per-pixel mean of K samples (seeds seed + i * K + k); the uncertainty is their per-pixel
standard deviation (ddof=1, mean over RGB) and |error| the mean absolute difference to the original, both in
[0, 1] pixel units and each drawn with its own colour scale, 0 to the value printed above the column.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from sr3infer import Upscaler
from sr3infer.train.data import face_eval_images, make_lowres, to_unit_tensor
from sr3infer.sampling.uncertainty import heatmap

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "datasets" / "celeba" / "val"
COMMITTED_GRID = HERE / "face_grid.png"  # its last column: val faces 000900, ... as 128x128, under a 16 px title row
OUT = HERE / "out"  # where the examples write by default; ignored by git, so a run leaves the checkout clean


def committed_faces(count: int, size: int = 128) -> list[torch.Tensor]:
    """The first `count` val faces of the committed face_grid.png (a fresh clone has no ../shared datasets)."""
    grid = Image.open(COMMITTED_GRID).convert("RGB")
    left = grid.width - size
    return [to_unit_tensor(grid.crop((left, 16 + k * size, grid.width, 16 + (k + 1) * size)))
            for k in range(min(count, (grid.height - 16) // size))]


def titled_grid(columns: list[tuple[str, list[Image.Image]]]) -> Image.Image:
    """Titled columns of equal-size pictures, one row per face."""
    w, h = columns[0][1][0].size
    canvas = Image.new("RGB", (w * len(columns), 16 + h * len(columns[0][1])), "white")
    for c, (title, pictures) in enumerate(columns):
        ImageDraw.Draw(canvas).text((c * w + 4, 2), title, fill="black")
        for r, picture in enumerate(pictures):
            canvas.paste(picture, (c * w, 16 + r * h))
    return canvas


def to_pil(unit: torch.Tensor) -> Image.Image:
    """(3, H, W) in [0, 1] -> RGB."""
    return Image.fromarray((unit.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())


def scale_for(maps: np.ndarray) -> float:
    """A round colour-scale top near the 99th percentile of `maps`, so a few outliers do not wash the map out."""
    top = float(np.percentile(maps, 99))
    return float(f"{top:.1g}") if top > 0 else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sr3-face-8x")
    parser.add_argument("--data", help="CelebA aligned faces (178x218); default ../shared/datasets/celeba/val, "
                                       "else the faces of the committed face_grid.png")
    parser.add_argument("--preset", default="realism", help="the model's recipe; its default recipe when it has none")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--count", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", default=str(OUT / "uncertainty_faces.png"),
                        help="default examples/out/uncertainty_faces.png; the README's picture is remade by "
                             "naming examples/uncertainty_faces.png")
    args = parser.parse_args()

    upscaler = Upscaler.from_pretrained(args.model, device="cpu")
    preset = args.preset if args.preset in upscaler.config.presets else None
    if preset is None:
        print(f"note: {args.model} has no {args.preset!r} preset; using its default recipe {upscaler.config.sampling}")
    size = upscaler.config.out_size
    if args.data is None and not DEFAULT_DATA.is_dir() and size == 128:
        print(f"note: no {DEFAULT_DATA}; using the val faces of the committed {COMMITTED_GRID.name}")
        faces = committed_faces(args.count)
    else:
        faces = face_eval_images(args.data or DEFAULT_DATA, size)[: args.count]
    hr = (torch.stack(faces) + 1) / 2
    lowres = (make_lowres(hr * 2 - 1, upscaler.config.scale) + 1) / 2
    out = upscaler.upscale(lowres, num_samples=args.samples, seed=args.seed, preset=preset, output_type="pt",
                           progress=False, return_dict=True)
    mean, uncertainty = out.images, out.uncertainty
    error = (mean - hr).abs().mean(1).numpy()
    u_top, e_top = scale_for(uncertainty), scale_for(error)
    columns = [
        ("input (nearest)", [to_pil(torch.nn.functional.interpolate(lowres, size=size, mode="nearest")[i])
                             for i in range(len(hr))]),
        (f"mean of {args.samples} samples", [to_pil(m) for m in mean]),
        (f"uncertainty 0-{u_top:g}", [heatmap(u, vmax=u_top) for u in uncertainty]),
        (f"|error| 0-{e_top:g}", [heatmap(e, vmax=e_top) for e in error]),
    ]
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    titled_grid(columns).save(args.output)
    print(f"wrote {args.output} ({preset or 'default recipe'}, K = {args.samples}; mean uncertainty "
          f"{uncertainty.mean():.4f}, mean |error| {error.mean():.4f})")


if __name__ == "__main__":
    main()
