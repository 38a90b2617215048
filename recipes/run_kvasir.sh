#!/usr/bin/env bash
# Built-in kvasir preset: SL-UNet 8L/2Res, 256x256; 40 epochs (EPOCHS=30 for the shipped preset, ~71 min on 2 CPU cores).
exec bash "$(dirname "$0")/train_preset.sh" kvasir "${DATA:-../shared/data/kvasir-seg}" sl_unet_8l2r 256 "${EPOCHS:-40}"
