"""README face grid: input | bicubic | peer (ESRGAN thick) | SR3 fidelity | SR3 realism | original, a row per val face.

    python examples/face_grid.py                       # bundled sr3-face-8x, 8 val faces -> examples/out/face_grid.png
    python examples/face_grid.py --data ../shared/datasets/celeba/val --peer-dir benchmarks/peers/work/faces/peer
    python examples/face_grid.py --model runs/sr3-face-8x/export --count 4 -o /tmp/face_grid.png

The faces are the first `--count` of `sr3infer eval`'s faces protocol (`load_eval_set(data, "faces", 128)`), made
16x16 by `make_lowres`; the input column shows them enlarged by nearest neighbour. The peer column is read from the
PNGs that benchmarks/peers/esrgan_thick.py writes (`work/faces/peer/0000.png` is val face 0, and so on), checked
against the low-res PNGs it wrote beside them. SR3 face k uses the seed `seed + k` in both preset columns.
The PNG is lossless (about 0.9 MB for 8 faces), so every column shows the exact pixels (tests/conftest.py takes
the val faces from its original column). Without --data, and without ../shared/datasets/celeba/val (a fresh
clone), the faces and the peer's outputs are read back from the committed face_grid.png itself.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from sr3infer import Upscaler
from sr3infer.images.resample import bicubic
from sr3infer.quality import metrics
from sr3infer.train.data import make_lowres, to_unit_tensor
from sr3infer.train.evaluate import load_eval_set

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "celeba" / "val"
DEFAULT_PEER_DIR = REPO / "benchmarks" / "peers" / "work" / "faces" / "peer"
COMMITTED_GRID = HERE / "face_grid.png"
OUT = HERE / "out"  # where the examples write by default; ignored by git, so a run leaves the checkout clean
CELL, TITLE = 128, 16  # the committed grid: columns of 128 px faces under a 16 px title row
PRESETS = ("fidelity", "realism")


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


def grid_columns(path: Path, cell: int = CELL, title: int = TITLE) -> list[list[Image.Image]]:
    """The pictures of a grid written by `grid_image`, column by column (each column top to bottom)."""
    grid = Image.open(path).convert("RGB")
    cols, rows = grid.width // cell, (grid.height - title) // cell
    return [[grid.crop((c * cell, title + r * cell, (c + 1) * cell, title + (r + 1) * cell)) for r in range(rows)]
            for c in range(cols)]


def peer_outputs(folder: Path, lowres: torch.Tensor, size: int) -> torch.Tensor:
    """The peer's upscaled faces 0000.png, 0001.png, ... from `folder`, as (N, 3, size, size) in [-1, 1].

    When the low-res PNGs the benchmark upscaled are beside `folder` (../lowres), they must be `lowres` to the bit,
    so the peer column shows the same faces as the others.
    """
    make = (f"python {Path('benchmarks/peers/esrgan_thick.py')} --domains faces --limit {len(lowres)} --no-fid "
            f"--no-fixture-check --json /tmp/peer_faces.json   # from the repository root, after "
            f"`(cd benchmarks/peers && npm ci --ignore-scripts)`")
    names = [f"{i:04d}.png" for i in range(len(lowres))]
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise SystemExit(f"The peer's outputs {', '.join(missing)} are not in {folder}; expected the PNGs that "
                         f"benchmarks/peers/esrgan_thick.py writes for the val faces. Make them with:\n  {make}\n"
                         f"or pass --peer-dir FOLDER.")
    inputs = folder.parent / "lowres"
    if inputs.is_dir():
        ours = ((lowres + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
        for name, expected in zip(names, ours):
            path = inputs / name
            if not path.is_file() or not np.array_equal(np.asarray(Image.open(path).convert("RGB")), expected):
                raise SystemExit(f"{path} is not val face {name[:4]} made low-res, so {folder} holds the peer's "
                                 f"outputs for other images; remake them with:\n  {make}")
    else:
        print(f"note: no {inputs} beside the peer's outputs, so their order could not be checked against the faces")
    images = [to_unit_tensor(Image.open(folder / name)) for name in names]
    for name, image in zip(names, images):
        if tuple(image.shape[-2:]) != (size, size):
            raise SystemExit(f"{folder / name} is {image.shape[-1]}x{image.shape[-2]}; expected {size}x{size}.")
    return torch.stack(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sr3-face-8x",
                        help="a model name or folder with fidelity and realism presets")
    parser.add_argument("--data", help="CelebA aligned val faces (178x218); default ../shared/datasets/celeba/val, "
                                       "else the faces of the committed face_grid.png")
    parser.add_argument("--peer-dir", type=Path, default=DEFAULT_PEER_DIR,
                        help="the peer's upscaled val faces 0000.png, ... (default: what esrgan_thick.py writes)")
    parser.add_argument("--from-committed-grid", action="store_true",
                        help="take the val faces and peer outputs from the committed face_grid.png (lossless, the same "
                             "pixels) even where the val folder exists: re-draws the SR3 columns without the peer's npm run")
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--palette", action="store_true",
                        help="a 256-colour PNG: a third of the size, but smooth skin bands and no column is exact")
    parser.add_argument("-o", "--output", default=str(OUT / "face_grid.png"),
                        help="default examples/out/face_grid.png; the README's picture is remade by naming "
                             "examples/face_grid.png")
    args = parser.parse_args()
    if args.count < 1:
        parser.error(f"--count must be at least 1; got {args.count}")

    upscaler = Upscaler.from_pretrained(args.model, device="cpu")
    missing = [name for name in PRESETS if name not in upscaler.config.presets]
    if missing:
        raise SystemExit(f"{args.model} has no {' or '.join(missing)} preset (its config.json 'presets': "
                         f"{sorted(upscaler.config.presets) or 'none'}); pass --model with a model that has both.")
    size = upscaler.config.out_size
    if args.from_committed_grid or (args.data is None and not DEFAULT_DATA.is_dir()):
        if size != CELL:
            raise SystemExit(f"{args.model} makes {size} px faces; pass --data with the CelebA val faces.")
        columns = grid_columns(COMMITTED_GRID)
        print(f"note: using the val faces and peer outputs of the committed {COMMITTED_GRID.name}")
        hr = torch.stack([to_unit_tensor(face) for face in columns[-1][: args.count]])
        peer = torch.stack([to_unit_tensor(face) for face in columns[2][: args.count]])
        lowres = make_lowres(hr, upscaler.config.scale)
    else:
        try:
            hr = torch.stack(load_eval_set(args.data or DEFAULT_DATA, "faces", size)[: args.count])
        except (FileNotFoundError, ValueError) as error:
            raise SystemExit(f"{error} Pass --data with the CelebA val faces.") from None
        lowres = make_lowres(hr, upscaler.config.scale)
        peer = peer_outputs(args.peer_dir, lowres, size)

    unit = (lowres + 1) / 2
    sr = {name: upscaler.upscale(unit, preset=name, seed=args.seed, output_type="pt", progress=False) * 2 - 1
          for name in PRESETS}
    columns = [
        (f"input {lowres.shape[-1]}x{lowres.shape[-2]}",
         torch.nn.functional.interpolate(lowres, size=size, mode="nearest")),
        ("bicubic", bicubic(lowres, size).clamp(-1, 1)),
        ("ESRGAN thick (peer)", peer),
        ("SR3 fidelity", sr["fidelity"]),
        ("SR3 realism", sr["realism"]),
        ("original", hr),
    ]
    grid = grid_image([(title, [to_pil(image) for image in images]) for title, images in columns])
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    partial = Path(f"{args.output}.partial")  # renamed when complete: never a half-written grid
    (grid.quantize(256, method=Image.Quantize.MEDIANCUT) if args.palette else grid).save(partial, "PNG", optimize=True)
    partial.replace(args.output)
    for name in PRESETS:
        print(f"{name}: {upscaler.config.presets[name]}")
    for title, images in columns[1:-1]:
        print(f"{title}: PSNR {metrics.psnr(images, hr).mean():.2f} dB, consistency "
              f"{metrics.consistency(images, lowres).mean() * 1e5:.2f}e-5 (mean of these {len(hr)} faces)")
    print(f"wrote {args.output} ({Path(args.output).stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
