"""Robust image reading: any format Pillow knows, any mode, to RGB uint8.

The tf.data pipeline, prediction and the dataset scanner all read images
through :func:`load_rgb`, so a file that scans clean also decodes in training.
"""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from labtf.errors import LabtfError

log = logging.getLogger(__name__)

#: File endings the scanner treats as images (case-insensitive).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff")

#: Smallest side (px) an image may have; smaller files are rejected.
MIN_SIDE = 8


#: Largest image (width x height, decoded pixels) labtf decodes anywhere: CLI, training,
#: serving, collect, curate. A 20 KB 1-bit PNG can declare 13000x13000 px (1.9 GB as
#: RGB); the header is checked before any pixel is decoded.
MAX_PIXELS = 40_000_000
# Pillow only warns between its own limit (89 MP) and twice that; check_pixels refuses first
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class BadImage(LabtfError):
    """An image file that cannot be used; the message names the file."""


def check_pixels(img: Image.Image, name: str | os.PathLike) -> None:
    """Refuse an opened (not yet decoded) image larger than :data:`MAX_PIXELS`.

    Args:
        img: from ``Image.open`` (only the header has been read).
        name: the file or field named in the error.

    Raises:
        BadImage: more than ``MAX_PIXELS`` pixels.
    """
    w, h = img.size
    if w * h > MAX_PIXELS:
        raise BadImage(f"{name}: image is {w}x{h} px ({w * h / 1e6:.0f} MP), more than the "
                       f"{MAX_PIXELS / 1e6:.0f} MP labtf decodes; downscale it")


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB, compositing transparency onto white.

    16-bit grey (``I;16*``, or ``I`` as older Pillow opens 16-bit PNGs) keeps its brightness:
    0..65535 maps to 0..255 by its high byte, the same pixels ``tf.io.decode_png`` gives (Pillow's
    own conversion would clip everything above 255 to white). Wider ``I`` data is scaled by its
    maximum; float (``F``) data, whose range is unknown, is stretched min..max.

    Args:
        img: a loaded Pillow image (L, LA, P, PA, RGBA, CMYK, I;16, I, F, ...).

    Returns:
        An RGB image of the same size.
    """
    if img.mode == "RGB":
        return img
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.clip(np.asarray(img, dtype=np.int64), 0, None)
        top = max(int(arr.max(initial=0)), 0xFFFF) + 1      # 65536 for 16-bit data: v >> 8
        return Image.fromarray((arr * 256 // top).astype(np.uint8), "L").convert("RGB")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        return Image.fromarray(scaled.astype(np.uint8), "L").convert("RGB")
    return img.convert("RGB")


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as an RGB uint8 array of shape (H, W, 3).

    The first frame of animated GIF/WebP is used; EXIF orientation is applied.

    Args:
        path: image file.

    Returns:
        uint8 array (H, W, 3).

    Raises:
        BadImage: missing, empty, truncated, corrupt, non-image, tiny or huge file.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except (OSError, ValueError) as exc:      # ValueError: a NUL in the name
        raise BadImage(f"{path!r}: cannot read ({getattr(exc, 'strerror', None) or exc}); "
                       "check the path") from None
    if size == 0:
        raise BadImage(f"{path}: empty file (0 bytes); remove it or re-download it")
    try:
        with Image.open(path) as img:
            check_pixels(img, path)
            img.seek(0)
            img.load()
            img = ImageOps.exif_transpose(img) or img
            rgb = to_rgb(img)
    except UnidentifiedImageError:
        raise BadImage(f"{path}: not an image (expected JPEG, PNG, GIF, BMP, WebP or TIFF)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise BadImage(f"{path}: corrupt or truncated image ({exc}); remove or replace it") from None
    if min(rgb.size) < MIN_SIDE:
        raise BadImage(f"{path}: image is {rgb.size[0]}x{rgb.size[1]} px, smaller than "
                       f"{MIN_SIDE} px; remove it")
    return np.asarray(rgb, dtype=np.uint8)


def load_rgb_bytes(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes (JPEG/PNG/...) to RGB uint8 (H, W, 3).

    Raises:
        BadImage: the bytes are not a readable image.
    """
    import io

    if not data:
        raise BadImage(f"{name}: empty image data")
    try:
        with Image.open(io.BytesIO(data)) as img:
            check_pixels(img, name)
            img.seek(0)
            img.load()
            rgb = to_rgb(ImageOps.exif_transpose(img) or img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError) as exc:
        raise BadImage(f"{name}: not a readable image ({exc})") from None
    return np.asarray(rgb, dtype=np.uint8)


def center_square(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resize the shorter side to ``size`` and crop the centre square.

    Args:
        rgb: uint8 (H, W, 3).
        size: output side in pixels.

    Returns:
        uint8 (size, size, 3).
    """
    h, w = rgb.shape[:2]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    img = Image.fromarray(rgb).resize((nw, nh), Image.BILINEAR, reducing_gap=3.0)
    top, left = (nh - size) // 2, (nw - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)


#: How an image becomes a square model input.
RESIZE_MODES = ("crop", "pad", "squash")


def to_square(rgb: np.ndarray, size: int, mode: str = "crop") -> np.ndarray:
    """Make a ``size`` x ``size`` input from any image.

    Args:
        rgb: uint8 (H, W, 3).
        size: output side.
        mode: ``crop`` (shorter side to ``size``, centre crop; ImageNet style),
            ``pad`` (longer side to ``size``, white letterbox: keeps the whole
            object, good for drawings and product shots) or ``squash`` (stretch).

    Returns:
        uint8 (size, size, 3).

    Raises:
        LabtfError: unknown mode.
    """
    if mode == "crop":
        return center_square(rgb, size)
    if mode == "squash":
        img = Image.fromarray(rgb).resize((size, size), Image.BILINEAR, reducing_gap=3.0)
        return np.asarray(img, dtype=np.uint8)
    if mode == "pad":
        h, w = rgb.shape[:2]
        scale = size / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        img = Image.fromarray(rgb).resize((nw, nh), Image.BILINEAR, reducing_gap=3.0)
        canvas = Image.new("RGB", (size, size), (255, 255, 255))
        canvas.paste(img, ((size - nw) // 2, (size - nh) // 2))
        return np.asarray(canvas, dtype=np.uint8)
    raise LabtfError(f"unknown resize mode '{mode}'; choose one of: {', '.join(RESIZE_MODES)}")


def is_image_name(path: str | os.PathLike) -> bool:
    """True when the file name has an image ending."""
    return str(path).lower().endswith(IMAGE_SUFFIXES)
