"""Segmentation metrics (Dice, IoU), binary and multi-class; metrics inside a region of interest (vessels);
depth metrics."""

from keras_sl.metrics.depth import (
    DEPTH_METRIC_NAMES,
    AbsRel,
    Delta1,
    DepthMAE,
    DepthRMSE,
    Log10,
    RMSELog,
    SqRel,
    depth_errors,
    depth_metrics,
)
from keras_sl.metrics.region import (
    REGION_METRIC_NAMES,
    PooledRegionMetrics,
    region_metrics,
    roc_auc,
)
from keras_sl.metrics.segmentation import Dice, IoU, dice_per_image, iou_per_image

__all__ = [
    "DEPTH_METRIC_NAMES",
    "REGION_METRIC_NAMES",
    "AbsRel",
    "Delta1",
    "DepthMAE",
    "DepthRMSE",
    "Dice",
    "IoU",
    "Log10",
    "PooledRegionMetrics",
    "RMSELog",
    "SqRel",
    "depth_errors",
    "depth_metrics",
    "dice_per_image",
    "iou_per_image",
    "region_metrics",
    "roc_auc",
]
