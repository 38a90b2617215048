#!/usr/bin/env bash
# Issue-22 DRIVE vessel presets: SL-UNet 5L/1Res (`drive`) and its 2-D twin UNet 5L/1Res (`drive_unet_5l1r`),
# one recipe: the official 20 training images at full resolution (565x584), 100 random 96x96 patches of each
# per epoch centred inside the field of view, flips and 90-degree turns, batch 16, 40 epochs, AdamW 1e-3 with
# cosine warm restarts every 10 epochs; whole test images predicted by 96x96 sliding windows (overlap 0.5,
# Gaussian blending) and scored inside the field of view. Resumable: rerun the script; finished runs are skipped.
# Usage: bash recipes/run_drive.sh [MODEL ...]   (default: sl_unet_5l1r unet_5l1r; PARALLEL=1 runs them at once)
# Env: EPOCHS (40), RUNS (runs), DRIVE (data folder), KERAS_BACKEND (tensorflow).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs} EPOCHS=${EPOCHS:-40} DRIVE=${DRIVE:-../shared/data/drive}
models=("$@"); [ ${#models[@]} -eq 0 ] && models=(sl_unet_5l1r unet_5l1r)
mkdir -p "$RUNS"
run() {
  local name=drive_$1
  if [ -f "$RUNS/$name/results.json" ]; then echo "$name: done ($RUNS/$name/results.json)"; return; fi
  local cmd=(python recipes/table3.py --dataset drive --data "$DRIVE" --model "$1" --resolution 96
             --patches-per-image 100 --batch-size 16 --epochs "$EPOCHS" --out "$RUNS/$name"
             --preset "$RUNS/$name/preset")
  echo "$name: ${cmd[*]}"
  [ "${DRY_RUN:-0}" = 1 ] && return
  KERAS_BACKEND=${KERAS_BACKEND:-tensorflow} TF_CPP_MIN_LOG_LEVEL=3 "${cmd[@]}" >>"$RUNS/$name.log" 2>&1
}
if [ "${PARALLEL:-0}" = 1 ]; then
  for m in "${models[@]}"; do run "$m" & done; wait
else
  for m in "${models[@]}"; do run "$m"; done
fi
