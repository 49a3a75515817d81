"""Where did the model invent detail? input | ensemble output | uncertainty | |error|, one row per validation face.

    python examples/uncertainty_faces.py                  # bundled sr3-face-8x, K = 8, writes examples/uncertainty_faces.png
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
from PIL import Image

from face_grid import grid_image  # this folder is on sys.path when run as a script
from sr3infer import Upscaler
from sr3infer.train.data import face_eval_images, make_lowres
from sr3infer.uncertainty import heatmap

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "datasets" / "celeba" / "val"


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
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="CelebA aligned faces (178x218)")
    parser.add_argument("--preset", default="realism", help="the model's recipe; its default recipe when it has none")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--count", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", default=str(HERE / "uncertainty_faces.png"))
    args = parser.parse_args()

    upscaler = Upscaler.from_pretrained(args.model, device="cpu")
    preset = args.preset if args.preset in upscaler.config.presets else None
    if preset is None:
        print(f"note: {args.model} has no {args.preset!r} preset; using its default recipe {upscaler.config.sampling}")
    size = upscaler.config.out_size
    hr = (torch.stack(face_eval_images(args.data, size)[: args.count]) + 1) / 2
    lowres = (make_lowres(hr * 2 - 1, upscaler.config.scale) + 1) / 2
    mean, uncertainty = upscaler.upscale(lowres, num_samples=args.samples, seed=args.seed, preset=preset,
                                         output_type="pt", progress=False, return_uncertainty=True)
    error = (mean - hr).abs().mean(1).numpy()
    u_top, e_top = scale_for(uncertainty), scale_for(error)
    columns = [
        ("input (nearest)", [to_pil(torch.nn.functional.interpolate(lowres, size=size, mode="nearest")[i])
                             for i in range(len(hr))]),
        (f"mean of {args.samples} samples", [to_pil(m) for m in mean]),
        (f"uncertainty 0-{u_top:g}", [heatmap(u, vmax=u_top) for u in uncertainty]),
        (f"|error| 0-{e_top:g}", [heatmap(e, vmax=e_top) for e in error]),
    ]
    grid_image(columns).save(args.output)
    print(f"wrote {args.output} ({preset or 'default recipe'}, K = {args.samples}; mean uncertainty "
          f"{uncertainty.mean():.4f}, mean |error| {error.mean():.4f})")


if __name__ == "__main__":
    main()
