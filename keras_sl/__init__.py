"""keras_sl."""
