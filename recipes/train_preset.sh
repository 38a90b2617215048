#!/usr/bin/env bash
# Train one Table III configuration into runs/NAME and pretrained/NAME (resumable).
# Usage: bash recipes/train_preset.sh DATASET DATA_DIR MODEL RESOLUTION EPOCHS [NAME]
# MODEL is a keras_sl.registry name (e.g. sl_unet_8l2r); NAME defaults to DATASET_MODEL, the preset folder name.
# Env: RUNS (default runs), KERAS_BACKEND (default tensorflow), DRY_RUN=1 prints the command.
set -euo pipefail
cd "$(dirname "$0")/.."
dataset=$1 data=$2 model=$3 resolution=$4 epochs=$5 name=${6:-$1_$3}
RUNS=${RUNS:-runs}
cmd=(python recipes/table3.py --dataset "$dataset" --data "$data" --model "$model"
     --resolution "$resolution" --epochs "$epochs" --out "$RUNS/$name" --preset "pretrained/$name")
if [ "${DRY_RUN:-0}" = 1 ]; then echo "${cmd[*]}"; exit 0; fi
mkdir -p "$RUNS"
KERAS_BACKEND=${KERAS_BACKEND:-tensorflow} TF_CPP_MIN_LOG_LEVEL=3 "${cmd[@]}" 2>&1 | tee -a "$RUNS/$name.log"
