#!/usr/bin/env bash
# Train one Table III configuration into runs/NAME and pretrained/NAME (resumable).
# Usage: bash recipes/train_preset.sh DATASET DATA_DIR MODEL LEVELS RES RESOLUTION EPOCHS NAME
# Env: RUNS (default runs), KERAS_BACKEND (default tensorflow), DRY_RUN=1 prints the command.
set -euo pipefail
cd "$(dirname "$0")/.."
dataset=$1 data=$2 model=$3 levels=$4 res=$5 resolution=$6 epochs=$7 name=$8
RUNS=${RUNS:-runs}
cmd=(python recipes/table3.py --dataset "$dataset" --data "$data" --model "$model" --levels "$levels"
     --res "$res" --resolution "$resolution" --epochs "$epochs" --out "$RUNS/$name" --preset "pretrained/$name")
if [ "${DRY_RUN:-0}" = 1 ]; then echo "${cmd[*]}"; exit 0; fi
mkdir -p "$RUNS"
KERAS_BACKEND=${KERAS_BACKEND:-tensorflow} TF_CPP_MIN_LOG_LEVEL=3 "${cmd[@]}" 2>&1 | tee -a "$RUNS/$name.log"
