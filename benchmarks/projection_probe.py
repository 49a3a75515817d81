"""Can the input tell whether to project? An automatic consistency mode, tried on train crops.

    python benchmarks/projection_probe.py runs/sr3-real-x4/export
    python benchmarks/projection_probe.py runs/sr3-real-x4/export --lowpass 0 0.5 1 1.5 2


Projecting onto a clean input gains PSNR; projecting onto a JPEG'd or noisy one copies its defects back. The
candidate rule: project when the one-call output's residual `rms(down(output) - input)` is small. Measured on
48 crops of 12 train photos (seeded pick, star fields left out as in training), clean and every degraded kind
(train-side seeds, never the val set's): the residual per kind, and the mean PSNR change of projecting only the
inputs under each threshold. With `--lowpass`, also a low-pass projection for each sigma (low-res pixels):
one pass of `x + up(blur_sigma(input - down(x)))`, which holds the output to the input's coarse content (colour,
shading, edges' positions) and leaves the fine band, where JPEG blocks, noise and aliasing live, to the model
(sigma 0: one pass of the full projection, as `every` does at one step).
Writes results/<model>/projection_probe.json (runs/<model>/export: <model>).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sr3infer import Upscaler
from sr3infer.images.resample import bicubic, project_onto_input, spatial_size
from sr3infer.quality.metrics import psnr
from sr3infer.train.data import gaussian_blur, list_images, natural_crops
from sr3infer.train.degrade import VAL_KINDS, Degradation, degrade

HERE = Path(__file__).resolve().parent
TRAIN = HERE.parent / ".data" / "datasets" / "natural-lossless" / "train"
THRESHOLDS = (0.005, 0.008, 0.01, 0.012, 0.015, 0.02, 0.03)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--photos", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--lowpass", type=float, nargs="*", default=[], metavar="SIGMA",
                        help="also score one low-pass projection pass per sigma, in low-res pixels (0: the full one)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not TRAIN.is_dir():
        print(f"projection_probe.py: {TRAIN} is missing; build it with `python scripts/prepare_datasets.py`",
              file=sys.stderr)
        return 1
    torch.set_num_threads(args.threads)
    paths = [p for p in list_images(TRAIN) if not fnmatch.fnmatch(p.name, "stellarium-data_*")]
    paths = [paths[i] for i in np.random.default_rng(7).choice(len(paths), args.photos, replace=False)]
    crops = [c[None] for p in paths for c in natural_crops(Image.open(p).convert("RGB"), 256)]
    upscaler = Upscaler.from_pretrained(args.model, device="cpu")
    kinds = {"clean": Degradation(clean_prob=1.0), **VAL_KINDS}
    rows = []
    for k, (kind, spec) in enumerate(kinds.items()):
        for i, hr in enumerate(crops):
            lowres = degrade(hr, upscaler.config.scale, np.random.default_rng([99, i, k]), spec)
            out = upscaler.upscale_tensor(lowres, sampler="ddim", num_steps=1, consistency="none", progress=False,
                                          generator=torch.Generator().manual_seed(i))
            residual = float((bicubic(out, spatial_size(lowres)) - lowres).pow(2).mean().sqrt())
            rows.append({"kind": kind, "crop": i, "residual": residual, "none": float(psnr(out, hr)),
                         "final": float(psnr(project_onto_input(out, lowres), hr)),
                         **{f"lowpass_{s:g}": float(psnr(lowpass_projection(out, lowres, s), hr)) for s in args.lowpass}})
    summary = {}
    print(f"{'kind':>8} {'none':>6} {'final':>6} {'helps':>6}  residual q10 / q50 / q90")
    for kind in kinds:
        r = [row for row in rows if row["kind"] == kind]
        res = np.array([row["residual"] for row in r])
        summary[kind] = {"none": float(np.mean([row["none"] for row in r])),
                         "final": float(np.mean([row["final"] for row in r])),
                         "helps": float(np.mean([row["final"] > row["none"] for row in r])),
                         "residual_q10_q50_q90": [float(q) for q in np.quantile(res, [0.1, 0.5, 0.9])]}
        s = summary[kind]
        print(f"{kind:>8} {s['none']:6.2f} {s['final']:6.2f} {s['helps']:6.2f}  "
              + " / ".join(f"{q:.4f}" for q in s["residual_q10_q50_q90"]))
    if args.lowpass:
        print("one low-pass projection pass, mean PSNR change over none per kind (sigma in low-res pixels)")
        print(f"{'sigma':>6} " + " ".join(f"{kind:>8}" for kind in kinds))
        for s in args.lowpass:
            changes = [np.mean([row[f"lowpass_{s:g}"] - row["none"] for row in rows if row["kind"] == kind])
                       for kind in kinds]
            for kind, change in zip(kinds, changes):
                summary[kind][f"lowpass_{s:g}"] = float(change)
            print(f"{s:6g} " + " ".join(f"{c:+8.3f}" for c in changes))
    residuals = np.array([row["residual"] for row in rows])
    gains = np.array([row["final"] - row["none"] for row in rows])
    thresholds = {}
    print("project when residual <= t: mean PSNR change over all inputs (share projected)")
    for t in THRESHOLDS:
        chosen = residuals <= t
        thresholds[str(t)] = {"gain_db": float(np.where(chosen, gains, 0).mean()), "projected": float(chosen.mean())}
        print(f"  t={t:<6} {thresholds[str(t)]['gain_db']:+.3f} dB ({thresholds[str(t)]['projected']:.0%})")
    folder = Path(args.model)
    name = (folder.parent.name if folder.name == "export" else folder.name) if folder.exists() else args.model
    out = args.json or HERE / "results" / name / "projection_probe.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": args.model, "photos": [p.name for p in paths], "crops": len(crops),
                               "recipe": "ddim 1 step, linear; none vs the final projection",
                               "kinds": summary, "thresholds": thresholds, "rows": rows}, indent=1) + "\n")
    return 0


def lowpass_projection(x: torch.Tensor, lowres: torch.Tensor, sigma: float) -> torch.Tensor:
    """One pass of `x + up(blur(input - down(x)))`, clamped; sigma 0 is the full projection's pass."""
    difference = lowres - bicubic(x, spatial_size(lowres))
    if sigma > 0:
        difference = gaussian_blur(difference, torch.full((len(x),), float(sigma)))
    return (x + bicubic(difference, spatial_size(x))).clamp(-1, 1)


if __name__ == "__main__":
    sys.exit(main())
