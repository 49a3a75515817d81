#!/usr/bin/env bash
# Continue training a bundled model on a lent GPU for about 8-9 minutes, then write the exported model
# folder (the point a later stretch resumes from, via init_from) and the training log to $OUT.
#
# Run from the repository root on the GPU machine, with the data carried in the ignored folder .data/datasets
# (21 MB; built by `python scripts/prepare_datasets.py`, byte-identical to ../shared/datasets):
#   (device) bash scripts/train_on_gpu.sh sr3-face-8x      # carry: .data/datasets (not .data/.cache), .venv is not needed
# CONFIG=training/stretches/<stretch>.json takes that stretch's recipe (noise sampling, sigma_data, seed); the
# batch, threads, time limits and init_from below override it. The export comes back in fp16 (a file from the
# device may be at most 16 MiB; the fp32 export of the face net is 24 MiB), as the bundled weights are.
# Then, here: python scripts/bundle_model.py ... --export <files_at>/export  (see that script).
set -euo pipefail
NAME="${1:-sr3-face-8x}"
PYTHON="${PYTHON:-python3}"   # the device image has python3 (its torch venv), no plain python
MINUTES="${MINUTES:-8.5}"
OUT="${OUT:-/tmp/out}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1   # the device has no package index
CONFIG="${CONFIG:-training/$NAME.json}"
case "$NAME" in
  sr3-face-8x) DATA=.data/datasets/celeba/train ;;
  sr3-64-256)  DATA=.data/datasets/natural/train ;;
  *) echo "unknown model $NAME" >&2; exit 2 ;;
esac
"$PYTHON" - "$NAME" "$DATA" "$MINUTES" "$CONFIG" <<'PY'
import json, sys
name, data, minutes, config = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
cfg = json.load(open(config))
cfg.update({
    "data_root": data, "out_dir": "runs-gpu", "batch_size": 64, "patch_size": 0 if name == "sr3-face-8x" else 128,
    "threads": 0, "autocast": "bf16", "max_minutes": minutes, "checkpoint_minutes": 3, "export_minutes": 3,
    "warmup_steps": 50, "lr": 2e-4, "init_from": f"sr3infer/bundled/{name}",
})
json.dump(cfg, open(f"/tmp/{name}-gpu.json", "w"), indent=2)
PY
"$PYTHON" -m sr3infer.train "/tmp/$NAME-gpu.json" 2>&1 | tee "$OUT/train.log"
"$PYTHON" scripts/bundle_model.py "$NAME" --export "runs-gpu/$NAME/export" --to "$OUT/export"   # fp16, as bundled
cp "runs-gpu/$NAME/log.jsonl" "$OUT/log.jsonl"
nvidia-smi --query-gpu=name --format=csv,noheader >> "$OUT/train.log" || true
# The full resumable state (weights + EMA + Adam, ~100 MB for 6M parameters) exceeds what comes back
# from the device (8 files, 64 MiB); the exported EMA folder, in fp16, is the continuation point (init_from).
