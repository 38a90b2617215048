#!/usr/bin/env bash
# Built-in dsb2018 preset: SL-UNet 5L/2Res, 96x96, 40 epochs (CPU: ~17 min).
exec bash "$(dirname "$0")/train_preset.sh" dsb2018 "${DATA:-../shared/data/dsb2018-96}" sl_unet_5l2r 96 40
