#!/usr/bin/env bash
# Train the built-in kvasir preset (SL-UNet 8L/2Res, 256x256; 40 epochs, EPOCHS=30 for the shipped preset) on CPU.
# Resumes from runs/kvasir_sl_8l2r/backup if interrupted; log in runs/kvasir_sl_8l2r.log.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/kvasir-seg}
RUNS=${RUNS:-runs}
mkdir -p "$RUNS"
KERAS_BACKEND=${KERAS_BACKEND:-tensorflow} TF_CPP_MIN_LOG_LEVEL=3 python recipes/table3.py \
  --dataset kvasir --data "$DATA" --model sl_unet --levels 8 --res 2 --resolution 256 --epochs ${EPOCHS:-40} \
  --out "$RUNS/kvasir_sl_8l2r" --preset pretrained/kvasir_sl_unet_8l2r 2>&1 | tee -a "$RUNS/kvasir_sl_8l2r.log"
