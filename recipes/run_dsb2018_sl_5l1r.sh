#!/usr/bin/env bash
# SL-UNet 5L/1Res on DSB2018 (96x96, 40 epochs): the like-for-like partner of the UNet 5L/1Res baseline.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/dsb2018-96}
RUNS=${RUNS:-runs}
mkdir -p "$RUNS"
KERAS_BACKEND=${KERAS_BACKEND:-tensorflow} TF_CPP_MIN_LOG_LEVEL=3 python recipes/table3.py \
  --dataset dsb2018 --data "$DATA" --model sl_unet --levels 5 --res 1 --resolution 96 --epochs 40 \
  --out "$RUNS/dsb2018_sl_5l1r" --preset pretrained/dsb2018_sl_unet_5l1r 2>&1 | tee -a "$RUNS/dsb2018_sl_5l1r.log"
