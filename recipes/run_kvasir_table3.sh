#!/usr/bin/env bash
# The remaining Kvasir-SEG rows of Table III (256x256, 40 epochs each, resumable).
# Usage: bash recipes/run_kvasir_table3.sh [MODEL:LEVELS:RES ...]  (default: sl_unet:5:1 unet:5:1)
set -euo pipefail
here="$(dirname "$0")"
for item in ${@:-sl_unet:5:1 unet:5:1}; do
  IFS=: read -r model levels res <<<"$item"
  bash "$here/train_preset.sh" kvasir "${DATA:-../shared/data/kvasir-seg}" "$model" "$levels" "$res" 256 \
    "${EPOCHS:-40}" "kvasir_${model}_${levels}l${res}r"
done
