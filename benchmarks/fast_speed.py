"""Images per second of a model's teacher preset against its `fast` preset, side by side in one run.

    python benchmarks/fast_speed.py sr3-face-8x --teacher realism --batch 1 --batch 8
    python benchmarks/fast_speed.py sr3-64-256 --teacher fidelity --batch 1 --batch 4

Each batch size runs the two recipes alternately (`--repeats` rounds, after one warm-up round each) on random
trained-size inputs through the public API (`upscale(images, preset=...)`), so both see the same machine state;
the table gives the median images per second and the ratio. A model without a `fast` preset yet is timed with
`--stand-in`: the student's recipe (DDIM, 1 step) on the teacher's own weights, which is the same network and so
the same cost; the JSON says which was timed. Writes results/<model>/fast_speed_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sr3infer import Recipe, Upscaler

RESULTS = Path(__file__).resolve().parent / "results"
STAND_IN = Recipe(sampler="ddim", num_steps=1, spacing="trailing", consistency="every")


def images_per_second(upscaler: Upscaler, images: list[np.ndarray], **recipe: object) -> float:
    started = time.perf_counter()
    upscaler.upscale(images, batch_size=len(images), seed=0, progress=False, **recipe)
    return len(images) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("--teacher", default="realism", help="the preset the fast one replaces (default realism)")
    parser.add_argument("--batch", type=int, action="append", help="images per call (repeatable; default 1)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--stand-in", action="store_true",
                        help="no fast preset yet: time DDIM 1 step on the teacher's weights (the same network)")
    args = parser.parse_args()
    upscaler = Upscaler.from_pretrained(args.model, device=args.device)
    teacher = upscaler.config.recipe(args.teacher)
    if "fast" in upscaler.config.presets:
        fast_kwargs: dict[str, object] = {"preset": "fast"}
        fast_label = "fast preset"
    elif args.stand_in:
        fast_kwargs, fast_label = {"recipe": STAND_IN}, "stand-in: DDIM 1 step on the teacher's weights"
    else:
        raise SystemExit(f"{args.model} has no fast preset; pass --stand-in to time its student's recipe on the "
                         "teacher's weights (the same network).")
    fast = upscaler.config.recipe("fast") if "fast" in upscaler.config.presets else STAND_IN
    side = upscaler.config.lowres_size
    rng = np.random.default_rng(0)
    rows = []
    for batch in args.batch or [1]:
        images = [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(batch)]
        times: dict[str, list[float]] = {"teacher": [], "fast": []}
        for round_ in range(args.repeats + 1):  # round 0 warms up both
            for name, kwargs in (("teacher", {"preset": args.teacher}), ("fast", fast_kwargs)):
                rate = images_per_second(upscaler, images, **kwargs)
                if round_:
                    times[name].append(rate)
        row = {"batch": batch, "teacher_images_per_s": statistics.median(times["teacher"]),
               "fast_images_per_s": statistics.median(times["fast"]), "rounds": times}
        row["ratio"] = row["fast_images_per_s"] / row["teacher_images_per_s"]
        rows.append(row)
    calls = {"teacher": teacher.num_steps * teacher.num_samples, "fast": fast.num_steps * fast.num_samples}
    print(f"{args.model} on {upscaler.device} ({upscaler.dtype}), {side}x{side} inputs; teacher {args.teacher} "
          f"({calls['teacher']} calls) vs {fast_label} ({calls['fast']} calls)")
    print("| batch | teacher img/s | fast img/s | ratio |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['batch']} | {row['teacher_images_per_s']:.3f} | {row['fast_images_per_s']:.3f} | "
              f"{row['ratio']:.1f}x |")
    out = RESULTS / Path(args.model).name / f"fast_speed_{upscaler.device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "model": args.model, "device": str(upscaler.device), "dtype": str(upscaler.dtype),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "teacher": {"preset": args.teacher, "recipe": teacher.to_dict(), "network_calls": calls["teacher"]},
        "fast": {"what": fast_label, "recipe": fast.to_dict(), "network_calls": calls["fast"]},
        "command": "python benchmarks/fast_speed.py " + " ".join(sys.argv[1:]), "rows": rows,
    }, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
