"""Built-in keras_sl presets (one folder per preset), shipped inside the wheel."""
