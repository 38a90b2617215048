"""Backend-agnostic layers (keras.ops only)."""

from keras_sl.layers.convolution import Convolution
from keras_sl.layers.initializers import HostInitializer
from keras_sl.layers.instance_norm import InstanceNorm
from keras_sl.layers.lift import Lift
from keras_sl.layers.lifted_structure import LiftedSlices
from keras_sl.layers.prelu import PReLU
from keras_sl.layers.slice_head import SliceHead
from keras_sl.layers.attention import SpatialReductionAttention
from keras_sl.layers.normalization import BatchNorm, LayerNorm
from keras_sl.layers.upsampling import Upsample, UpsampleLike, interpolate

__all__ = ["Convolution", "InstanceNorm", "Lift", "LiftedSlices", "PReLU", "SliceHead"]
__all__ += ["HostInitializer", "BatchNorm", "LayerNorm", "SpatialReductionAttention", "Upsample", "UpsampleLike", "interpolate"]
