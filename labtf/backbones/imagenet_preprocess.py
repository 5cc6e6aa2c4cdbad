"""ImageNet evaluation preprocessing shared by labtf and the torch reference.

numpy + Pillow only (no Keras, no torch), so that
``benchmarks/record_reference_logits.py`` feeds PyTorch exactly the same
pixels that the tests feed Keras.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from labtf.errors import LabtfError

#: Per backbone: per-channel ``(mean, std)`` in 0..255 units; the network
#: input is ``(rgb - mean) / std``.
NORMALIZATION: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    # TF's efficientnet/lite builder: MEAN_RGB = 127, STDDEV_RGB = 128.
    "efficientnet_lite": ((127.0, 127.0, 127.0), (128.0, 128.0, 128.0)),
    # torchvision's ImageNet mean/std.
    "mobilenet_v2_tv": ((0.485 * 255, 0.456 * 255, 0.406 * 255),
                        (0.229 * 255, 0.224 * 255, 0.225 * 255)),
}
NORMALIZATION["efficientnet_lite0"] = NORMALIZATION["efficientnet_lite"]
NORMALIZATION["efficientnet_lite1"] = NORMALIZATION["efficientnet_lite"]
NORMALIZATION["efficientnet_lite2"] = NORMALIZATION["efficientnet_lite"]

#: Native evaluation resolution per backbone.
INPUT_SIZE: dict[str, int] = {
    "efficientnet_lite0": 224, "efficientnet_lite1": 240,
    "efficientnet_lite2": 260, "mobilenet_v2_tv": 224,
}


def _resize_plane(plane: np.ndarray, width: int, height: int) -> np.ndarray:
    img = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32))
    return np.asarray(img.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)


def imagenet_eval_input(img_uint8: np.ndarray, size: int,
                        crop_fraction: float = 0.875) -> np.ndarray:
    """Resize the shorter side to ``floor(size / crop_fraction)``, center-crop ``size``.

    The torchvision eval recipe (``Resize(256)`` + ``CenterCrop(224)`` for
    224), done with Pillow's antialiased bilinear filter on float32 planes so
    the result does not depend on uint8 rounding.

    Args:
        img_uint8: ``(H, W, 3)`` RGB (or ``(H, W)`` gray, or RGBA) uint8 image.
        size: Output side length.
        crop_fraction: Fraction of the resized shorter side kept by the crop.

    Returns:
        ``(size, size, 3)`` float32 RGB in 0..255, not normalized.

    Raises:
        LabtfError: For an image that is not 2-D gray or RGB(A), or bad sizes.
    """
    img = np.asarray(img_uint8)
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] not in (3, 4):
        raise LabtfError(f"expected an (H, W, 3) RGB image, got shape {img.shape}")
    if not 0 < crop_fraction <= 1 or size < 1:
        raise LabtfError(f"bad eval crop: size={size}, crop_fraction={crop_fraction}")
    img = img[..., :3]
    h, w = img.shape[:2]
    short = int(math.floor(size / crop_fraction))
    if h <= w:
        new_h, new_w = short, int(short * w / h)
    else:
        new_h, new_w = int(short * h / w), short
    resized = np.stack([_resize_plane(img[..., c], new_w, new_h) for c in range(3)], axis=-1)
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    if top < 0 or left < 0:
        raise LabtfError(f"image too small to crop {size}x{size} after resizing")
    return np.ascontiguousarray(resized[top:top + size, left:left + size])


def normalize_input(x: np.ndarray, backbone: str) -> np.ndarray:
    """Apply a backbone's ``(x - mean) / std`` normalization.

    Args:
        x: ``(..., 3)`` RGB array in 0..255.
        backbone: A key of :data:`NORMALIZATION`.

    Returns:
        float32 array of the same shape.

    Raises:
        LabtfError: For an unknown backbone.
    """
    if backbone not in NORMALIZATION:
        raise LabtfError(f"no ImageNet normalization known for backbone {backbone!r}")
    mean, std = (np.asarray(v, dtype=np.float32) for v in NORMALIZATION[backbone])
    return ((np.asarray(x, dtype=np.float32) - mean) / std).astype(np.float32)
