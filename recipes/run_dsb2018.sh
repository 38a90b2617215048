#!/usr/bin/env bash
# Train the built-in dsb2018 preset (SL-UNet 5L/2Res, 96x96, 40 epochs) on CPU.
# Resumes from runs/dsb2018_sl_5l2r/backup if interrupted; log in runs/dsb2018_sl_5l2r.log.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/dsb2018-96}
RUNS=${RUNS:-runs}
mkdir -p "$RUNS"
KERAS_BACKEND=${KERAS_BACKEND:-tensorflow} TF_CPP_MIN_LOG_LEVEL=3 python recipes/table3.py \
  --dataset dsb2018 --data "$DATA" --model sl_unet --levels 5 --res 2 --resolution 96 --epochs 40 \
  --out "$RUNS/dsb2018_sl_5l2r" --preset pretrained/dsb2018_sl_unet_5l2r 2>&1 | tee -a "$RUNS/dsb2018_sl_5l2r.log"
