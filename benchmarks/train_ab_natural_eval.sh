#!/usr/bin/env bash
# A/B of sr3-64-256 network shapes from scratch at equal CPU time (issue 16 item 2): each arm's final export
# (or the bundled model) on all 24 val crops (6 photos x 4 quadrant crops), scored with one fixed recipe, the
# bundled model's fidelity preset: DDIM 10 quadratic, eta 1, consistency every, seed 0. The rule is in
# benchmarks/results/sr3-64-256/train_ab.md.
set -euo pipefail
cd "$(dirname "$0")/.."   # the repository root; run with the project venv active
mkdir -p benchmarks/results/sr3-64-256
for arm in "$@"; do
  case $arm in bundled) model=sr3infer/bundled/sr3-64-256;; *) model=runs/sr3-64-256-ab-$arm/export;; esac
  OMP_NUM_THREADS=1 sr3infer eval $model ../shared/datasets/natural/val --protocol natural --sampler ddim --steps 10 \
    --spacing quadratic --eta 1 --consistency every --seed 0 --batch-size 10 --no-fid \
    --json benchmarks/results/sr3-64-256/train_ab_${arm}_ddim10.json | tail -n 4
done
