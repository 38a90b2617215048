"""Segmentation metrics (Dice, IoU), binary and multi-class."""

from keras_sl.metrics.segmentation import Dice, IoU, dice_per_image, iou_per_image

__all__ = ["Dice", "IoU", "dice_per_image", "iou_per_image"]
