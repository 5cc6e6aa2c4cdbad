"""ImageNet evaluation preprocessing shared by labtf and the torch reference.

numpy + Pillow only (no Keras, no torch), so that
``benchmarks/record_reference_logits.py`` feeds PyTorch exactly the same
pixels that the tests feed Keras. The constants are the backbone registry's
(``input_size``, ``PREPROCESSING``): one table for the model and the reference.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from labtf.backbones.registry import PREPROCESSING, get_backbone
from labtf.errors import LabtfError


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


def normalization(backbone: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """A backbone's per-channel ``(mean, std)`` in 0..255 units (from ``PREPROCESSING``).

    Raises:
        LabtfError: unknown backbone (the message lists the valid ones).
    """
    p = PREPROCESSING[get_backbone(backbone).preprocessing]
    return tuple(p["mean"]), tuple(p["std"])


def normalize_input(x: np.ndarray, backbone: str) -> np.ndarray:
    """Apply a backbone's preprocessing: RGB->BGR where it asks, then ``(x - mean) / std``.

    Args:
        x: ``(..., 3)`` RGB array in 0..255.
        backbone: registry name.

    Returns:
        float32 array of the same shape.

    Raises:
        LabtfError: For an unknown backbone.
    """
    p = PREPROCESSING[get_backbone(backbone).preprocessing]
    x = np.asarray(x, dtype=np.float32)
    if p["bgr"]:
        x = x[..., ::-1]
    mean, std = (np.asarray(p[k], dtype=np.float32) for k in ("mean", "std"))
    return ((x - mean) / std).astype(np.float32)
