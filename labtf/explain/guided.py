"""Guided backpropagation that works for every ReLU style, and float32 model copies.

tf-keras-vis' ``GuidedBackpropagation`` modifier swaps ``layer.activation``
only, so it leaves models whose activations are separate ``ReLU`` /
``ReLU(6.)`` / ``Activation("relu")`` layers (EfficientNet-Lite, MobileNet,
ResNet in Keras 3) untouched: their "guided" gradients are plain gradients.
:func:`guided_clone` clones the model and gives every ReLU-family activation,
layer or attribute, the guided gradient of Springenberg et al.: pass a
gradient only where the forward derivative is non-zero *and* the incoming
gradient is positive.
"""
from __future__ import annotations

import logging
from typing import Any

import keras
import tensorflow as tf

log = logging.getLogger(__name__)


def _guided(fn):
    """Wrap an elementwise ReLU-family function with the guided gradient."""

    @tf.custom_gradient
    def guided(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
        local = tape.gradient(y, x)  # forward derivative (0/1 for ReLU, ReLU6, leaky...)

        def grad(dy):
            return tf.cast(dy > 0, dy.dtype) * tf.cast(local > 0, dy.dtype) * dy * local

        return y, grad

    return guided


@keras.saving.register_keras_serializable(package="labtf")
class GuidedReLU(keras.layers.Layer):
    """ReLU (optionally capped / leaky / thresholded) with the guided-backprop gradient."""

    def __init__(self, max_value: float | None = None, negative_slope: float = 0.0,
                 threshold: float = 0.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.max_value, self.negative_slope, self.threshold = max_value, negative_slope, threshold

    def call(self, x):
        return _guided(lambda v: keras.activations.relu(
            v, negative_slope=self.negative_slope, max_value=self.max_value,
            threshold=self.threshold))(x)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "max_value": self.max_value,
                "negative_slope": self.negative_slope, "threshold": self.threshold}


_RELU_FNS = {keras.activations.relu: None, keras.activations.relu6: 6.0}


def _replace(layer: keras.layers.Layer) -> Any:
    """clone_model hook: ReLU-family layers and activations become guided."""
    cfg = layer.get_config()
    if isinstance(layer, keras.layers.ReLU):
        return GuidedReLU(cfg.get("max_value"), float(cfg.get("negative_slope") or 0.0),
                          float(cfg.get("threshold") or 0.0), name=layer.name)
    act = getattr(layer, "activation", None)
    if isinstance(layer, keras.layers.Activation) and act in _RELU_FNS:
        return GuidedReLU(_RELU_FNS[act], name=layer.name)
    new = layer.__class__.from_config(cfg)
    if act in _RELU_FNS and not isinstance(layer, keras.layers.Activation):
        cap = _RELU_FNS[act]
        new.activation = _guided(lambda v: keras.activations.relu(v, max_value=cap))
    return new


def guided_clone(model: keras.Model) -> keras.Model:
    """A copy of ``model`` (same weights) whose ReLU-family gradients are guided.

    Args:
        model: a functional Keras model.

    Returns:
        The guided copy; its weights are copied now (call ``set_weights`` to resync).
    """
    clone = keras.models.clone_model(model, clone_function=_replace)
    clone.set_weights(model.get_weights())
    n = sum(isinstance(lyr, GuidedReLU) for lyr in clone.layers)
    log.debug("guided clone of %s: %d ReLU layers made guided", model.name, n)
    return clone


def _float32_config(obj: Any) -> Any:
    """Replace every dtype policy in a serialized config by float32."""
    if isinstance(obj, dict):
        if obj.get("class_name") == "DTypePolicy" or obj.get("class_name") == "FloatDTypePolicy":
            return {**obj, "config": {**obj.get("config", {}), "name": "float32"}}
        return {k: ("float32" if k == "dtype" and isinstance(v, str) and "mixed" in v
                    else _float32_config(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_float32_config(v) for v in obj]
    return obj


def float32_model(model: keras.Model) -> keras.Model:
    """``model`` itself if it computes in float32, else a float32 copy with the same weights.

    tf-keras-vis upsamples maps with scipy, which cannot take bfloat16, and
    half-precision gradients are noisy; maps are always computed in float32.
    """
    if all(getattr(lyr, "compute_dtype", "float32") == "float32" for lyr in model.layers):
        return model
    clone = model.__class__.from_config(_float32_config(model.get_config()))
    clone.set_weights([w.astype("float32") for w in model.get_weights()])
    log.info("maps computed in float32 (the model was trained with mixed precision)")
    return clone
