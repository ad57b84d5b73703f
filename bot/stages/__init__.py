"""Stage logic: model (resolve/download the base), quantize, validate, card, publish, watch, pipeline."""
