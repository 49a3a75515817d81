"""Before/after grid for the face model: low-res input | bicubic | SR3 | original, one row per validation face.

    python examples/face_grid.py                       # bundled sr3-face-8x, 6 faces, writes examples/face_grid.png
    python examples/face_grid.py --model runs/sr3-face-8x/export --count 4
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from sr3infer import Upscaler
from sr3infer.resample import bicubic
from sr3infer.train.data import face_eval_images, make_lowres

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "datasets" / "celeba" / "val"


def to_pil(x: torch.Tensor) -> Image.Image:
    return Image.fromarray(((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy())


def grid_image(columns: list[tuple[str, list[Image.Image]]]) -> Image.Image:
    """Equal-size pictures in titled columns, one row per image."""
    width, height = columns[0][1][0].size
    label_h = 16
    grid = Image.new("RGB", (width * len(columns), height * len(columns[0][1]) + label_h), "white")
    draw = ImageDraw.Draw(grid)
    for col, (title, images) in enumerate(columns):
        draw.text((col * width + 4, 2), title, fill="black")
        for row, image in enumerate(images):
            grid.paste(image, (col * width, label_h + row * height))
    return grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sr3-face-8x")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="CelebA aligned faces (178x218)")
    parser.add_argument("--count", type=int, default=6)
    parser.add_argument("--steps", type=int, help="default: the model's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", default=str(HERE / "face_grid.png"))
    args = parser.parse_args()

    upscaler = Upscaler.from_pretrained(args.model, device="cpu")
    size = upscaler.config.out_size
    hr = torch.stack(face_eval_images(args.data, size)[: args.count])
    lowres = make_lowres(hr, upscaler.config.scale)
    sr = upscaler.upscale_tensor(lowres, num_steps=args.steps,
                                 generator=[torch.Generator().manual_seed(args.seed + k) for k in range(len(hr))])
    columns = [
        ("input (nearest)", torch.nn.functional.interpolate(lowres, size=size, mode="nearest")),
        ("bicubic", bicubic(lowres, size).clamp(-1, 1)),
        ("SR3", sr),
        ("original", hr),
    ]
    grid_image([(title, [to_pil(image) for image in images]) for title, images in columns]).save(args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
