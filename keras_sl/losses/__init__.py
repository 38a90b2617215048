"""Losses of the paper: slice supervision, structure loss, Dice, masked depth."""

from keras_sl.losses.dice_loss import DiceLoss
from keras_sl.losses.masked_regression import MaskedDepthLoss, MaskedL1, MaskedMSE
from keras_sl.losses.slice_supervision import SliceSupervision
from keras_sl.losses.structure_loss import StructureLoss, boundary_weights

_ALIASES = {
    "structure": StructureLoss,
    "wbce_wiou": StructureLoss,
    "dice": DiceLoss,
    "masked_mse": MaskedMSE,
    "masked_l1": MaskedL1,
    "masked_depth": MaskedDepthLoss,
}


def get(identifier):
    """Resolve a loss name (``"structure"``, ``"dice"``, ...) or Keras loss."""
    if isinstance(identifier, str) and identifier in _ALIASES:
        return _ALIASES[identifier]()
    import keras

    return keras.losses.get(identifier)


__all__ = [
    "DiceLoss",
    "MaskedDepthLoss",
    "MaskedL1",
    "MaskedMSE",
    "SliceSupervision",
    "StructureLoss",
    "boundary_weights",
    "get",
]
