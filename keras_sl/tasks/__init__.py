"""Tasks: preprocessor + backbone + head, taking raw images."""

from keras_sl.tasks.depth_estimator import DepthEstimator, SLDepthEstimator
from keras_sl.tasks.segmenter import Segmenter
from keras_sl.tasks.sl_segmenter import SLSegmenter
from keras_sl.tasks.task import Task

__all__ = ["DepthEstimator", "SLDepthEstimator", "SLSegmenter", "Segmenter", "Task"]
