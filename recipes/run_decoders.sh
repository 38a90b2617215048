#!/usr/bin/env bash
# Issue-19 decoder zoo: EfficientNet-Lite0 (ImageNet weights, frozen) + UNet / SL-UNet / EMCAD / SL-EMCAD decoders,
# on Kvasir-SEG (256x256) and DSB2018 (96x96 images resized to 128x128), one model after another (resumable:
# rerun the script; finished runs are skipped). Each run writes runs/NAME/{log.csv,results.json,preset/}.
# Usage: bash recipes/run_decoders.sh [NAME ...]   (default: all eight, in the order below)
# Env: EPOCHS (default 20), RUNS (default runs), KVASIR, DSB (data folders), KERAS_BACKEND (default tensorflow).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs} EPOCHS=${EPOCHS:-20}
KVASIR=${KVASIR:-../shared/data/kvasir-seg} DSB=${DSB:-../shared/data/dsb2018-96}
all=(kvasir_effnetlite0_sl_unet_8l2r kvasir_effnetlite0_unet_8l2r
     dsb2018_effnetlite0_sl_unet_8l2r dsb2018_effnetlite0_unet_8l2r dsb2018_effnetlite0_emcad
     kvasir_effnetlite0_emcad dsb2018_effnetlite0_sl_emcad kvasir_effnetlite0_sl_emcad)
names=("$@"); [ ${#names[@]} -eq 0 ] && names=("${all[@]}")
mkdir -p "$RUNS"
for name in "${names[@]}"; do
  dataset=${name%%_*} model=${name#*_}
  case $dataset in kvasir) data=$KVASIR res=256 ;; dsb2018) data=$DSB res=128 ;; *) echo "unknown dataset in $name" >&2; exit 2 ;; esac
  if [ -f "$RUNS/$name/results.json" ]; then echo "$name: done ($RUNS/$name/results.json)"; continue; fi
  cmd=(python recipes/table3.py --dataset "$dataset" --data "$data" --model "$model" --freeze-encoder
       --resolution "$res" --epochs "$EPOCHS" --out "$RUNS/$name" --preset "$RUNS/$name/preset")
  echo "$name: ${cmd[*]}"
  [ "${DRY_RUN:-0}" = 1 ] && continue
  KERAS_BACKEND=${KERAS_BACKEND:-tensorflow} TF_CPP_MIN_LOG_LEVEL=3 "${cmd[@]}" 2>&1 | tee -a "$RUNS/$name.log"
done
