#!/usr/bin/env bash
# The remaining Kvasir-SEG rows of Table III (256x256, 40 epochs each, resumable).
# Usage: bash recipes/run_kvasir_table3.sh [sl_unet:5:1 unet:5:1 ...]  (default: SL 5L/1Res, UNet 5L/1Res)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/kvasir-seg}
RUNS=${RUNS:-runs}
mkdir -p "$RUNS"
for spec in "${@:-sl_unet:5:1 unet:5:1}"; do
  for item in $spec; do
    IFS=: read -r model levels res <<<"$item"
    name="kvasir_${model}_${levels}l${res}r"
    KERAS_BACKEND=${KERAS_BACKEND:-tensorflow} TF_CPP_MIN_LOG_LEVEL=3 python recipes/table3.py \
      --dataset kvasir --data "$DATA" --model "$model" --levels "$levels" --res "$res" --resolution 256 \
      --epochs "${EPOCHS:-40}" --out "$RUNS/$name" --preset "pretrained/$name" 2>&1 | tee -a "$RUNS/$name.log"
  done
done
