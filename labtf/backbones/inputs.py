"""Shared input handling for labtf-built backbones."""
from __future__ import annotations

from typing import Any

import keras

from labtf.errors import LabtfError


def backbone_inputs(input_shape: tuple, input_tensor: Any | None) -> tuple[Any, Any]:
    """``(model inputs, first tensor)`` from an input shape or an existing Keras tensor.

    With ``input_tensor`` (e.g. the output of labtf's preprocessing layer) the
    backbone is built on it and its layers sit flat in the caller's graph.

    Args:
        input_shape: ``(H, W, 3)``, used when ``input_tensor`` is None.
        input_tensor: A Keras tensor ``(None, H, W, 3)`` to build on (as in
            ``keras.applications``); the model then starts at its source inputs.

    Returns:
        The inputs for ``keras.Model`` and the tensor the network starts from.

    Raises:
        LabtfError: If the shape is not ``(H, W, 3)``.
    """
    if input_tensor is not None:
        shape = tuple(input_tensor.shape[1:])
        if len(shape) != 3 or shape[-1] != 3:
            raise LabtfError(f"the backbone needs an (H, W, 3) input, got {shape}")
        return keras.utils.get_source_inputs(input_tensor), input_tensor
    if len(tuple(input_shape)) != 3 or input_shape[-1] != 3:
        raise LabtfError(f"the backbone needs an (H, W, 3) input shape, got {input_shape}")
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    return inputs, inputs
