#!/usr/bin/env bash
# 2-D UNet 5L/1Res baseline on DSB2018, trained exactly like the SL-UNet preset (96x96, 40 epochs).
exec bash "$(dirname "$0")/train_preset.sh" dsb2018 "${DATA:-../shared/data/dsb2018-96}" unet_5l1r 96 40
