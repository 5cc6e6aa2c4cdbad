"""The classifier: preprocessing -> backbone -> GAP -> dropout -> Dense, head in float32.

Built with ``keras`` / ``keras.ops`` only, so it runs on the TensorFlow and JAX
backends. The model takes RGB pixels in 0..255 (float), so every artifact made
from it needs only decode and resize in front.
"""
from __future__ import annotations

import logging

import keras
from keras import ops

from labtf.backbones import PREPROCESSING, BackboneSpec
from labtf.config import PRECISIONS, check_choice
from labtf.errors import LabtfError

log = logging.getLogger(__name__)

#: Names of the head layers (the on-device CAM export reads these).
GAP, DROPOUT, LOGITS, PROBS = "gap", "head_dropout", "logits", "probs"


@keras.saving.register_keras_serializable(package="labtf")
class Preprocess(keras.layers.Layer):
    """Per-channel ``(x - mean) / std`` with optional RGB->BGR, from 0..255 pixels."""

    def __init__(self, mode: str = "none", **kwargs) -> None:
        super().__init__(**kwargs)
        check_choice("preprocessing", mode, list(PREPROCESSING))
        self.mode = mode
        p = PREPROCESSING[mode]
        self._mean = [float(v) for v in p["mean"]]
        self._scale = [1.0 / float(v) for v in p["std"]]
        self._bgr = bool(p["bgr"])

    def call(self, x):
        x = ops.cast(x, self.compute_dtype)
        if self._bgr:
            x = ops.flip(x, axis=-1)
        if self.mode == "none":
            return x
        mean = ops.convert_to_tensor(self._mean, dtype=self.compute_dtype)
        scale = ops.convert_to_tensor(self._scale, dtype=self.compute_dtype)
        return (x - mean) * scale

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "mode": self.mode}


def set_precision(policy: str) -> None:
    """Set Keras' global dtype policy (``float32``, ``mixed_float16``, ``mixed_bfloat16``)."""
    check_choice("mixed precision policy", policy, PRECISIONS)
    keras.mixed_precision.set_global_policy(policy)


def build_classifier(spec: BackboneSpec, num_classes: int, image_size: int | None = None,
                     weights: str | None = "imagenet", dropout: float = 0.2) -> keras.Model:
    """Build the transfer-learning classifier.

    Args:
        spec: backbone spec from the registry.
        num_classes: number of output classes (>= 2).
        image_size: square input side; ``None`` uses the backbone's.
        weights: ``"imagenet"`` or ``None``.
        dropout: dropout rate before the Dense layer.

    Returns:
        A functional model (input ``image``, 0..255 RGB) whose output ``probs`` is
        float32 softmax; the backbone's layers sit flat in it so the CAM layer is
        reachable by name.

    Raises:
        LabtfError: fewer than two classes or unobtainable weights.
    """
    if num_classes < 2:
        raise LabtfError(f"a classifier needs at least 2 classes, got {num_classes}")
    size = int(image_size or spec.input_size)
    inputs = keras.Input((size, size, 3), name="image")
    x = Preprocess(spec.preprocessing, name="preprocess")(inputs)
    features = spec.build(x, weights)
    feat = features.output
    x = keras.layers.GlobalAveragePooling2D(name=GAP, dtype="float32")(feat)
    x = keras.layers.Dropout(dropout, name=DROPOUT, dtype="float32")(x)
    x = keras.layers.Dense(num_classes, name=LOGITS, dtype="float32")(x)
    probs = keras.layers.Activation("softmax", name=PROBS, dtype="float32")(x)
    model = keras.Model(inputs, probs, name=f"labtf_{spec.name}")
    return model


def cam_layer_name(model: keras.Model, spec: BackboneSpec) -> str:
    """The Grad-CAM target layer: the spec's, or the layer feeding the GAP."""
    if spec.cam_layer:
        return spec.cam_layer
    gap = model.get_layer(GAP)
    return gap.input._keras_history.operation.name


def backbone_layers(model: keras.Model) -> list:
    """Layers between the preprocessing and the head, in graph order."""
    head = {GAP, DROPOUT, LOGITS, PROBS, "preprocess"}
    return [layer for layer in model.layers
            if layer.name not in head and not isinstance(layer, keras.layers.InputLayer)]


def freeze_backbone(model: keras.Model) -> None:
    """Stage 1: only the head trains."""
    for layer in backbone_layers(model):
        layer.trainable = False


def unfreeze_top(model: keras.Model, spec: BackboneSpec, blocks: int) -> int:
    """Stage 2: unfreeze the top ``blocks`` blocks (BatchNorm stays frozen).

    Returns:
        Number of layers made trainable.

    Raises:
        LabtfError: the spec's block boundary is missing from the model.
    """
    layers = backbone_layers(model)
    if blocks <= 0:
        return 0
    if not spec.block_ends:
        start = 0
    else:
        boundary = spec.block_ends[min(blocks, len(spec.block_ends)) - 1]
        names = [layer.name for layer in layers]
        if boundary not in names:
            raise LabtfError(f"backbone {spec.name}: block boundary layer '{boundary}' not found")
        start = names.index(boundary) + 1
    count = 0
    for layer in layers[start:]:
        if isinstance(layer, keras.layers.BatchNormalization):
            continue
        layer.trainable = True
        count += 1
    log.info("fine-tuning: %d layers of %s unfrozen (%d block(s))", count, spec.name, blocks)
    return count
