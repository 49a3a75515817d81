#!/usr/bin/env bash
# A/B of face training at equal CPU time: each export (and the bundled start point) on all 50 val faces,
# two recipes: DDIM 3 linear + every (a fidelity-type recipe), ancestral 10 linear + every (a sample).
set -euo pipefail
cd "$(dirname "$0")/.."   # the repository root; run with the project venv active
REF="../shared/datasets/celeba/train ../shared/datasets/celeba/val"
mkdir -p benchmarks/results/sr3-face-8x
for arm in "$@"; do
  case $arm in bundled) model=sr3infer/bundled/sr3-face-8x;; *) model=runs/sr3-face-8x-ab-$arm/export;; esac
  for recipe in "ddim 3" "ancestral 10"; do
    set -- $recipe
    OMP_NUM_THREADS=1 sr3infer eval $model ../shared/datasets/celeba/val --protocol faces --sampler $1 --steps $2 \
      --spacing linear --consistency every --reference $REF --batch-size 10 \
      --json benchmarks/results/sr3-face-8x/train_ab_${arm}_$1$2.json | tail -n 3
  done
done
