"""A model's `fast` preset (its distilled student) beside its teacher presets on the whole val set, as the preset
search scores them (same data, protocol, KID reference, seed), and a picture: teacher realism | fast | original on
the 4 val crops with the most detail.

    python benchmarks/student_score.py sr3-64-256                                   # the model's own fast preset
    python benchmarks/student_score.py sr3-64-256 --student runs/sr3-64-256-fast/export   # a candidate student

With `--student` the teacher is copied to a scratch folder whose config gains a `fast` preset running the
candidate's weights (its default recipe), so the candidate is scored through the same public path
(`preset="fast"`) as a released one. Writes results/<model>/fast_preset.json and fast_preset.png.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sr3infer import Upscaler
from sr3infer.hub.fetch import resolve_model_files
from sr3infer.hub.manifest import sha256_file
from sr3infer.models.config import Recipe
from sr3infer.quality import metrics
from sr3infer.train.evaluate import evaluate, load_eval_set, reference_features

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "datasets"
DOMAINS = {"sr3-64-256": ("natural", "natural"), "sr3-face-8x": ("celeba", "faces")}


def with_candidate(teacher: str, student: Path, scratch: Path) -> Path:
    """A copy of the teacher's folder whose config has a `fast` preset running `student`'s default recipe."""
    config_path, weights_path = resolve_model_files(teacher)
    folder = scratch / "teacher"
    folder.mkdir()
    shutil.copy(weights_path, folder / "model.safetensors")
    config = json.loads(Path(config_path).read_text(encoding="utf-8"))
    recipe = json.loads((student / "config.json").read_text(encoding="utf-8"))["sampling"]
    config.setdefault("presets", {})["fast"] = {**recipe, "weights": str(student.resolve())}
    (folder / "config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    return folder


def picture(rows: list[list[torch.Tensor]], path: Path) -> None:
    """Rows of (teacher realism, fast, original) in [-1, 1], side by side: the centre half of each image."""
    def centre(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return x[..., h // 4 : h // 4 + h // 2, w // 4 : w // 4 + w // 2]

    tiles = [torch.cat([centre(x) for x in row], dim=-1) for row in rows]
    grid = torch.cat(tiles, dim=-2)
    array = ((grid.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(np.ascontiguousarray(array)).save(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=sorted(DOMAINS))
    parser.add_argument("--student", type=Path, help="a candidate student's model folder (a distill export)")
    parser.add_argument("--teacher-presets", nargs="*", default=["realism", "fidelity"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    folder, protocol = DOMAINS[args.model]
    data, reference_dirs = SHARED / folder / "val", [SHARED / folder / "train", SHARED / folder / "val"]
    for needed in (data, *reference_dirs):
        if not needed.is_dir():
            print(f"student_score.py: {needed} is missing (the shared datasets beside the checkout)", file=sys.stderr)
            return 1
    torch.set_num_threads(args.threads)
    out = args.out or HERE / "results" / args.model / "fast_preset.json"
    with tempfile.TemporaryDirectory() as scratch:
        source = with_candidate(args.model, args.student, Path(scratch)) if args.student else args.model
        upscaler = Upscaler.from_pretrained(source, device="cpu")
        if "fast" not in upscaler.config.presets:
            print(f"student_score.py: {args.model} has no fast preset; pass --student FOLDER", file=sys.stderr)
            return 1
        student = upscaler.weights_for(upscaler.config.recipe("fast"))
        _, student_weights = resolve_model_files(student.source)
        student_sha = sha256_file(student_weights)
        images = load_eval_set(data, protocol, upscaler.config.out_size)
        reference = reference_features(reference_dirs, protocol, upscaler.config.out_size) \
            if metrics.FID_AVAILABLE else None
        rows, outputs = {}, {}
        for preset in ["fast", *args.teacher_presets]:
            started = time.time()
            result = evaluate(upscaler, images, batch_size=args.batch_size, seed=args.seed, reference=reference,
                              preset=preset)
            outputs[preset] = result.pop("outputs")
            recipe: Recipe = upscaler.config.recipe(preset)
            rows[preset] = {**result, "recipe": {**recipe.to_dict(), "weights": recipe.weights and Path(
                recipe.weights).name}, "network_calls": recipe.num_steps * recipe.num_samples}
            m = result["model"]
            print(f"{preset:9s} {rows[preset]['network_calls']:3d} calls  PSNR {m['psnr']:.2f}  SSIM {m['ssim']:.4f}  "
                  f"consistency {m['consistency_1e5']:.4f}e-5  KID {m.get('kid_1e3', float('nan')):.2f}e-3  "
                  f"[{time.time() - started:.0f} s]", flush=True)
    bic = rows["fast"]["bicubic"]
    print(f"bicubic             PSNR {bic['psnr']:.2f}  SSIM {bic['ssim']:.4f}  KID {bic.get('kid_1e3', float('nan')):.2f}e-3")
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"model": args.model, "student": str(args.student) if args.student else f"{args.model}'s fast preset",
              "data": f"shared/datasets/{folder}/val", "protocol": protocol, "images": len(images),
              "reference": [f"shared/datasets/{folder}/{part}" for part in ("train", "val")], "seed": args.seed,
              "threads": args.threads, "dtype": str(upscaler.dtype), "command": " ".join(["python", *sys.argv]),
              "student_weights_sha256": student_sha,
              "presets": rows}
    out.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    if "realism" in outputs:
        hr = torch.stack(images)
        # the 4 crops with the most detail (largest mean |horizontal + vertical difference| of the original)
        detail = (hr.diff(dim=-1).abs().mean((1, 2, 3)) + hr.diff(dim=-2).abs().mean((1, 2, 3)))
        picks = detail.argsort(descending=True)[:4].tolist()
        picture([[outputs["realism"][i], outputs["fast"][i], hr[i]] for i in picks], out.with_suffix(".png"))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
