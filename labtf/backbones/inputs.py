"""Shared input handling for labtf-built backbones."""
from __future__ import annotations

import keras


def backbone_inputs(input_shape, input_tensor=None):
    """Return ``(x, model_inputs)``: the tensor to build on and the model's inputs.

    With ``input_tensor`` (e.g. the output of labtf's preprocessing layer) the
    backbone is built on it and its layers sit flat in the caller's graph, as
    ``keras.applications`` models do with their ``input_tensor`` argument.
    """
    if input_tensor is None:
        x = keras.Input(shape=tuple(input_shape), name="input")
        return x, x
    return input_tensor, keras.utils.get_source_inputs(input_tensor)
