"""AlexNet and GoogLeNet (Inception v1) feature extractors in pure Keras 3.

``keras.applications`` has neither architecture, so they are built here from
``keras.layers`` only (no ``tf.*`` calls), which keeps them runnable on every
Keras 3 backend (TensorFlow, JAX, PyTorch).

Both builders return a *headless* ``keras.Model`` whose output is the last
convolutional feature map (rank 4), and whose last layer is named
``top_activation`` so Grad-CAM style explainers can find it by name. No
pretrained ImageNet weights exist offline: ``weights`` must be ``None``.

Parameter counts (no top, RGB input; "total" includes BN moving stats):

* ``build_alexnet()``: 2,469,696 (all trainable); with ``use_batchnorm=True``
  2,473,152 total, 2,470,848 trainable.
* ``build_googlenet()``: 5,995,392 total, 5,980,832 trainable (paper's 5x5
  branches, BatchNorm); 5,973,552 with ``use_batchnorm=False``. torchvision's
  variant (3x3 kernels in the "5x5" branch) has 5,599,904 trainable without
  its fc layer, i.e. 380,928 fewer.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import keras
from keras import layers

from labtf.backbones.inputs import backbone_inputs

Shape = Tuple[Optional[int], Optional[int], int]

_BN_EPSILON = 1e-3

# name: (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj) from Szegedy
# et al. 2014, Table 1.
GOOGLENET_BLOCKS: dict[str, Tuple[int, int, int, int, int, int]] = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}


def _check_weights(weights: Optional[str], arch: str) -> None:
    """Rejects anything but ``weights=None`` with a clear message."""
    if weights is not None:
        raise ValueError(
            f"{arch}: only weights=None is supported (no pretrained ImageNet "
            f"weights are available offline); got weights={weights!r}. To "
            "reuse trained weights, build the model and call "
            "model.load_weights(path)."
        )


def _channel_axis() -> int:
    return 1 if keras.config.image_data_format() == "channels_first" else -1


def _spatial_dims(input_shape: Sequence[Optional[int]]) -> Tuple[Optional[int], ...]:
    """Returns the (H, W) entries of ``input_shape`` for the data format."""
    if len(input_shape) != 3:
        raise ValueError(
            f"input_shape must have 3 entries (H, W, C), got {tuple(input_shape)}"
        )
    if _channel_axis() == 1:
        return tuple(input_shape[1:])
    return tuple(input_shape[:2])


def _alexnet_out_size(size: int) -> int:
    """Spatial size of AlexNet's conv5 output for an input side ``size``."""
    size = (size + 4 - 11) // 4 + 1  # conv1 11/4, pad 2
    size = (size - 3) // 2 + 1  # pool1 3/2
    # conv2 5/1 pad 2 keeps the size
    size = (size - 3) // 2 + 1  # pool2 3/2
    return size  # conv3-5 3/1 pad 1 keep the size


def build_alexnet(
    input_shape: Shape = (227, 227, 3),
    weights: Optional[str] = None,
    use_batchnorm: bool = False,
    name: str = "alexnet",
    input_tensor: Optional[keras.KerasTensor] = None,
) -> keras.Model:
    """Builds the AlexNet convolutional trunk (torchvision single-tower layout).

    Layers: conv 64-11/4 (pad 2), maxpool 3/2, conv 192-5 (pad 2), maxpool
    3/2, conv 384-3, conv 256-3, conv 256-3 (pad 1), each followed by ReLU.
    The final 3/2 max pooling and the fc layers are left to the head, so the
    output is the conv5 feature map (13x13x256 for 224 or 227 input).

    Args:
        input_shape: ``(H, W, C)``; ``(None, None, 3)`` for any size >= 31.
        weights: must be ``None`` (random init); no ImageNet weights offline.
        use_batchnorm: if True, every conv is bias-free and followed by
            BatchNormalization before its ReLU (not in the 2012 paper; off by
            default). The original local response normalisation is omitted,
            as in torchvision.
        name: model name.
        input_tensor: build on this tensor instead of a new Input (layers stay flat).

    Returns:
        A ``keras.Model`` mapping images to the conv5 map; its last layer is
        the ReLU named ``top_activation``.

    Raises:
        ValueError: ``weights`` is not None or the input is too small.
    """
    _check_weights(weights, "build_alexnet")
    for side in _spatial_dims(input_shape):
        if side is not None and _alexnet_out_size(side) < 1:
            raise ValueError(
                f"build_alexnet: input side {side} is too small, need >= 31"
            )
    bn_axis = _channel_axis()
    specs = [  # (filters, kernel, stride, padding, pool after)
        (64, 11, 4, 2, True),
        (192, 5, 1, 2, True),
        (384, 3, 1, 1, False),
        (256, 3, 1, 1, False),
        (256, 3, 1, 1, False),
    ]
    inputs, x = backbone_inputs(input_shape, input_tensor)
    for i, (filters, kernel, stride, pad, pool) in enumerate(specs, start=1):
        last = i == len(specs)
        x = layers.ZeroPadding2D(pad, name=f"conv{i}_pad")(x)
        x = layers.Conv2D(
            filters,
            kernel,
            strides=stride,
            use_bias=not use_batchnorm,
            name=f"conv{i}",
        )(x)
        if use_batchnorm:
            x = layers.BatchNormalization(
                axis=bn_axis, epsilon=_BN_EPSILON, name=f"conv{i}_bn"
            )(x)
        x = layers.ReLU(name="top_activation" if last else f"conv{i}_relu")(x)
        if pool:
            x = layers.MaxPooling2D(3, strides=2, name=f"pool{i}")(x)
    return keras.Model(inputs, x, name=name)


def _conv_bn(
    x: keras.KerasTensor,
    filters: int,
    kernel: int,
    name: str,
    strides: int = 1,
    use_batchnorm: bool = True,
) -> keras.KerasTensor:
    """Conv (same padding) -> optional BN -> ReLU, torchvision BasicConv2d."""
    x = layers.Conv2D(
        filters,
        kernel,
        strides=strides,
        padding="same",
        use_bias=not use_batchnorm,
        name=f"{name}_conv",
    )(x)
    if use_batchnorm:
        x = layers.BatchNormalization(
            axis=_channel_axis(), epsilon=_BN_EPSILON, name=f"{name}_bn"
        )(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _inception(
    x: keras.KerasTensor,
    block: str,
    filters: Tuple[int, int, int, int, int, int],
    use_batchnorm: bool,
) -> keras.KerasTensor:
    """One Inception v1 module; all its layers are named ``inception_<block>_*``."""
    f1, f3r, f3, f5r, f5, fp = filters
    p = f"inception_{block}"
    b1 = _conv_bn(x, f1, 1, f"{p}_1x1", use_batchnorm=use_batchnorm)
    b3 = _conv_bn(x, f3r, 1, f"{p}_3x3_reduce", use_batchnorm=use_batchnorm)
    b3 = _conv_bn(b3, f3, 3, f"{p}_3x3", use_batchnorm=use_batchnorm)
    b5 = _conv_bn(x, f5r, 1, f"{p}_5x5_reduce", use_batchnorm=use_batchnorm)
    b5 = _conv_bn(b5, f5, 5, f"{p}_5x5", use_batchnorm=use_batchnorm)
    bp = layers.MaxPooling2D(3, strides=1, padding="same", name=f"{p}_pool")(x)
    bp = _conv_bn(bp, fp, 1, f"{p}_pool_proj", use_batchnorm=use_batchnorm)
    return layers.Concatenate(axis=_channel_axis(), name=f"{p}_concat")(
        [b1, b3, b5, bp]
    )


def build_googlenet(
    input_shape: Shape = (224, 224, 3),
    weights: Optional[str] = None,
    use_batchnorm: bool = True,
    name: str = "googlenet",
    input_tensor: Optional[keras.KerasTensor] = None,
) -> keras.Model:
    """Builds GoogLeNet / Inception v1 (Szegedy et al. 2014) without its top.

    Stem: conv 64-7/2, maxpool 3/2, conv 64-1, conv 192-3, maxpool 3/2; then
    inception 3a, 3b, maxpool 3/2, 4a-4e, maxpool 2/2, 5a, 5b. Poolings use
    ``same`` padding, which reproduces torchvision's ``ceil_mode=True`` sizes
    (224 -> 7x7x1024). The auxiliary classifiers, LRN, final average pooling,
    dropout and fc layer are omitted. Unlike torchvision, the "5x5" branch
    really uses 5x5 kernels, as in the paper.

    Args:
        input_shape: ``(H, W, C)``; ``(None, None, 3)`` accepts any size.
        weights: must be ``None`` (random init); no ImageNet weights offline.
        use_batchnorm: BatchNormalization after every conv (torchvision
            style, default) instead of conv biases.
        name: model name.
        input_tensor: build on this tensor instead of a new Input (layers stay flat).

    Returns:
        A ``keras.Model`` whose output is the concatenated inception 5b map
        (1024 channels), exposed by an identity layer named
        ``top_activation``.

    Raises:
        ValueError: ``weights`` is not None or ``input_shape`` is malformed.
    """
    _check_weights(weights, "build_googlenet")
    _spatial_dims(input_shape)
    bn = use_batchnorm
    inputs, x = backbone_inputs(input_shape, input_tensor)
    x = _conv_bn(x, 64, 7, "conv1", strides=2, use_batchnorm=bn)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    x = _conv_bn(x, 64, 1, "conv2_reduce", use_batchnorm=bn)
    x = _conv_bn(x, 192, 3, "conv2", use_batchnorm=bn)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool2")(x)
    for block in ("3a", "3b"):
        x = _inception(x, block, GOOGLENET_BLOCKS[block], bn)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool3")(x)
    for block in ("4a", "4b", "4c", "4d", "4e"):
        x = _inception(x, block, GOOGLENET_BLOCKS[block], bn)
    x = layers.MaxPooling2D(2, strides=2, padding="same", name="pool4")(x)
    for block in ("5a", "5b"):
        x = _inception(x, block, GOOGLENET_BLOCKS[block], bn)
    x = layers.Activation("linear", name="top_activation")(x)
    return keras.Model(inputs, x, name=name)
