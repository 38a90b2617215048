#!/usr/bin/env bash
# 2-D UNet 5L/1Res baseline on DSB2018 (96x96, 40 epochs), trained exactly like the SL-UNet preset.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/dsb2018-96}
RUNS=${RUNS:-runs}
mkdir -p "$RUNS"
KERAS_BACKEND=${KERAS_BACKEND:-tensorflow} TF_CPP_MIN_LOG_LEVEL=3 python recipes/table3.py \
  --dataset dsb2018 --data "$DATA" --model unet --levels 5 --res 1 --resolution 96 --epochs 40 \
  --out "$RUNS/dsb2018_unet_5l1r" --preset pretrained/dsb2018_unet_5l1r 2>&1 | tee -a "$RUNS/dsb2018_unet_5l1r.log"
