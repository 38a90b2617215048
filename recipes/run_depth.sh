#!/usr/bin/env bash
# Issue-20 depth models: EfficientNet-Lite0 (ImageNet weights, frozen) + FastDepth / SL-FastDepth decoders
# (and the MiDaS pair: pass their names) on 7-Scenes redkitchen (500 frames: the first 400 train, the last 100
# test — contiguous blocks of the one sequence), at 192x256 (the frames' 4:3 aspect), one model after another
# (resumable: rerun the script; finished runs are skipped). Each run writes runs/NAME/{log.csv,results.json,preset/}.
# Usage: bash recipes/run_depth.sh [NAME ...]   (default: the FastDepth pair)
# Env: EPOCHS (default 40), RUNS (default runs), SEVENSCENES (data folder), KERAS_BACKEND (default tensorflow).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs} EPOCHS=${EPOCHS:-40}
SEVENSCENES=${SEVENSCENES:-../shared/data/7scenes-redkitchen}
all=(sevenscenes_effnetlite0_fastdepth sevenscenes_effnetlite0_sl_fastdepth)
names=("$@"); [ ${#names[@]} -eq 0 ] && names=("${all[@]}")
mkdir -p "$RUNS"
for name in "${names[@]}"; do
  model=${name#sevenscenes_}
  if [ -f "$RUNS/$name/results.json" ]; then echo "$name: done ($RUNS/$name/results.json)"; continue; fi
  cmd=(python recipes/table3.py --dataset 7scenes --data "$SEVENSCENES" --model "$model" --freeze-encoder
       --resolution 192x256 --epochs "$EPOCHS" --out "$RUNS/$name" --preset "$RUNS/$name/preset")
  echo "$name: ${cmd[*]}"
  [ "${DRY_RUN:-0}" = 1 ] && continue
  KERAS_BACKEND=${KERAS_BACKEND:-tensorflow} TF_CPP_MIN_LOG_LEVEL=3 "${cmd[@]}" 2>&1 | tee -a "$RUNS/$name.log"
done
