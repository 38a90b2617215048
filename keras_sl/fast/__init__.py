"""Backend- and device-specific execution paths of keras_sl (opt-in, never saved in configs).

Modules are imported on their own (``from keras_sl.fast import runtime``);
importing this package imports none of them.
"""
