#!/usr/bin/env bash
# The GPU checks of issue 6 in one prepared run on a CUDA machine (about 8 minutes on one H100):
#   1. tests/test_speed_paths.py and tests/test_folder_runs_on_ranks.py, whose CUDA tests run only there:
#      fp16 output within 2/255 mean abs difference of fp32 (same seed and noise), CUDA graphs equal
#      to eager, no host<->device sync inside the sampling loop, inductor compile equal to eager,
#      graph-capture failure falling back to eager;
#   2. benchmarks/unet_speed.py --device cuda: fp32/fp16/bf16 x eager/CUDA graphs/torch.compile against
#      the plain eager fp32 reference, per U-Net call and per upscaled image (20 DDIM steps), peak
#      memory, FLOPs per call against the measured matmul rate.
#
# Usage, from anywhere:   OUT=/some/folder bash scripts/gpu_checks.sh
# Results in $OUT (default ./gpu_results): env.txt, pytest_cuda.log, unet_speed_cuda.json, unet_speed_cuda.log.
# Each step has its own time limit (TEST_TIMEOUT, BENCH_TIMEOUT seconds); the benchmark rewrites its
# JSON after every model and batch size, so a step cut short still leaves what it measured.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_results}
PYTHON=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT"

{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
  "$PYTHON" -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda', torch.version.cuda, '| available', torch.cuda.is_available(), '|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"
} 2>&1 | tee "$OUT/env.txt"
if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_checks.sh: torch.cuda.is_available() is False here; run this on a machine with a CUDA GPU." >&2
  exit 2
fi

status=0
echo "== 1/2 tests (CUDA tests included) =="
timeout "${TEST_TIMEOUT:-240}" "$PYTHON" -m pytest -q -rA -s -p no:cacheprovider \
  tests/test_speed_paths.py tests/test_folder_runs_on_ranks.py 2>&1 | tee "$OUT/pytest_cuda.log" || status=1

echo "== 2/2 benchmark =="
timeout "${BENCH_TIMEOUT:-330}" "$PYTHON" benchmarks/unet_speed.py --device cuda \
  --out "$OUT/unet_speed_cuda.json" 2>&1 | tee "$OUT/unet_speed_cuda.log" || status=1

echo "== summary =="
grep -h "fp16 vs fp32" "$OUT/pytest_cuda.log" || echo "fp16 vs fp32 check did not run (see pytest_cuda.log)"
tail -n 3 "$OUT/pytest_cuda.log"
exit $status
