"""A comparison picture on the degraded val: per degradation kind, one val crop as degraded input | bicubic | the clean
photo model | the real-photo model | original (each model's fidelity preset, through the public API).

    python benchmarks/degraded_picture.py sr3-real-x4 --clean sr3-64-256 -o benchmarks/results/sr3-real-x4/degraded_val.jpg

The crop of each kind is the val crop with the most detail (largest mean |horizontal + vertical difference| of the
original) among those not shown in an earlier row, so no row is chosen by how well a model did on it. The centre
half of each 256x256 crop is shown, the input enlarged by nearest neighbour.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from sr3infer import Upscaler
from sr3infer.images.resample import bicubic
from sr3infer.train.degrade import VAL_KINDS, val_kind
from sr3infer.train.evaluate import load_eval_set

HERE = Path(__file__).resolve().parent
VAL = HERE.parent.parent / "shared" / "datasets" / "natural" / "val"
LABEL_H = 14


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="the real-photo model (name or folder)")
    parser.add_argument("--clean", default="sr3-64-256", help="the clean photo model beside it")
    parser.add_argument("--preset", default="fidelity")
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if not VAL.is_dir():
        print(f"degraded_picture.py: {VAL} is missing; it needs ../shared/datasets beside the checkout", file=sys.stderr)
        return 1
    torch.set_num_threads(args.threads)
    models = {name: Upscaler.from_pretrained(name, device="cpu") for name in (args.clean, args.model)}
    scale = models[args.model].config.scale
    hr = torch.stack(load_eval_set(VAL, "natural", models[args.model].config.out_size))
    detail = hr.diff(dim=-1).abs().mean((1, 2, 3)) + hr.diff(dim=-2).abs().mean((1, 2, 3))
    order = detail.argsort(descending=True).tolist()
    rows, titles = [], ["degraded input", "bicubic", f"{args.clean} {args.preset}", f"{args.model} {args.preset}",
                        "original"]
    for row, kind in enumerate(VAL_KINDS):
        i = order[row]
        lowres = val_kind(hr, scale, kind)[i : i + 1]  # the whole set is degraded, as the val scores it
        size = tuple(hr.shape[-2:])
        outs = [models[name].upscale_tensor(lowres, preset=args.preset, generator=torch.Generator().manual_seed(i),
                                            progress=False)
                for name in (args.clean, args.model)]
        nearest = torch.nn.functional.interpolate(lowres, size=size, mode="nearest")
        rows.append((kind, [nearest, bicubic(lowres, size), *outs, hr[i : i + 1]]))
        print(f"{kind}: val crop {i}", flush=True)
    write_grid(rows, titles, args.output)
    print(f"wrote {args.output}")
    return 0


def write_grid(rows: list[tuple[str, list[torch.Tensor]]], titles: list[str], path: Path) -> None:
    """Rows of (1, 3, H, W) images in [-1, 1], the centre half of each, titles above the columns, kinds on the left."""
    def centre(x: torch.Tensor) -> np.ndarray:
        h, w = x.shape[-2:]
        x = x[0, :, h // 4 : h // 4 + h // 2, w // 4 : w // 4 + w // 2]
        return ((x.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()

    side = centre(rows[0][1][0]).shape[0]
    gap, left = 4, 56
    canvas = Image.new("RGB", (left + len(titles) * (side + gap), LABEL_H + len(rows) * (side + gap)), "white")
    draw = ImageDraw.Draw(canvas)
    for c, title in enumerate(titles):
        draw.text((left + c * (side + gap) + 2, 1), title, fill="black")
    for r, (kind, images) in enumerate(rows):
        y = LABEL_H + r * (side + gap)
        draw.text((2, y + side // 2 - 6), kind, fill="black")
        for c, image in enumerate(images):
            canvas.paste(Image.fromarray(np.ascontiguousarray(centre(image))), (left + c * (side + gap), y))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, quality=90)


if __name__ == "__main__":
    sys.exit(main())
