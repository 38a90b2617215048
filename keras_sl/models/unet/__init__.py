from keras_sl.models.unet.unet import UNet

__all__ = ["UNet"]
