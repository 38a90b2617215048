from keras_sl.models.sl_unet.sl_unet import SLUNet, lifted_strides

__all__ = ["SLUNet", "lifted_strides"]
