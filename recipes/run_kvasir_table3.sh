#!/usr/bin/env bash
# The remaining Kvasir-SEG rows of Table III (256x256, 40 epochs each, resumable).
# Usage: bash recipes/run_kvasir_table3.sh [MODEL ...]  (keras_sl.registry names; default: sl_unet_5l1r unet_5l1r)
set -euo pipefail
here="$(dirname "$0")"
for model in ${@:-sl_unet_5l1r unet_5l1r}; do
  bash "$here/train_preset.sh" kvasir "${DATA:-../shared/data/kvasir-seg}" "$model" 256 "${EPOCHS:-40}"
done
