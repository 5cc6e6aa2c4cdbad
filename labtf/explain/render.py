"""Pictures of explanations: overlays, guided-gradient images, contact sheets, the poster panel.

All drawing is Pillow + a matplotlib colormap (no figure machinery), and every
file is written atomically (temp file + rename).
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from labtf.fileio import write_bytes

#: Colormap of heat maps and the overlay opacity.
CMAP, ALPHA = "jet", 0.45


def _font(size: int = 12):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def heat(m: np.ndarray) -> np.ndarray:
    """A 0..1 map (H, W) as an RGB uint8 heat image."""
    import matplotlib

    rgba = matplotlib.colormaps[CMAP](np.clip(m, 0.0, 1.0))
    return (rgba[..., :3] * 255).astype(np.uint8)


def overlay(image: np.ndarray, m: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """Blend the heat image of ``m`` over ``image`` (uint8 (H, W, 3)); same size."""
    if m.shape != image.shape[:2]:
        m = np.asarray(Image.fromarray(m.astype(np.float32)).resize(
            image.shape[1::-1], Image.BILINEAR))
    out = (1 - alpha) * image.astype(np.float32) + alpha * heat(m).astype(np.float32)
    return out.clip(0, 255).astype(np.uint8)


def gradient_image(g: np.ndarray) -> np.ndarray:
    """Signed RGB gradients (H, W, 3) as a viewable uint8 image (grey = 0)."""
    g = g.astype(np.float64)
    g = (g - g.mean()) / (g.std() + 1e-12) * 0.15 + 0.5
    return (g.clip(0, 1) * 255).astype(np.uint8)


def captioned(tile: np.ndarray, text: str, width: int | None = None) -> Image.Image:
    """A tile with a caption strip underneath (text clipped to the tile width)."""
    img = Image.fromarray(tile)
    if width and img.width != width:
        img = img.resize((width, round(img.height * width / img.width)), Image.BILINEAR)
    font = _font(12)
    lines = text.split("\n")
    strip = 16 * len(lines) + 4
    canvas = Image.new("RGB", (img.width, img.height + strip), "white")
    canvas.paste(img, (0, 0))
    d = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        d.text((3, img.height + 2 + 16 * i), line, fill="black", font=font)
    return canvas


def labelled_overlay(image: np.ndarray, m: np.ndarray, label: str, confidence: float,
                     method: str = "") -> Image.Image:
    """Overlay with "label  p=0.97 (method)" written under it."""
    text = f"{label}  p={confidence:.2f}" + (f"\n{method}" if method else "")
    return captioned(overlay(image, m), text, width=max(224, image.shape[1]))


def explanation_tile(image: np.ndarray, e, method: str) -> Image.Image:
    """The captioned picture of one explanation: a heat-map overlay, or for guided methods
    (``e.rgb`` set) the signed RGB gradient image, as in Selvaraju et al.'s Guided Backprop
    and Guided Grad-CAM figures (a jet overlay of their sparse maps reads as a blue wash).

    Args:
        image: uint8 (S, S, 3) model input.
        e: a :class:`labtf.explain.core.Explanation`.
        method: method name for the caption.
    """
    if e.rgb is None:
        return labelled_overlay(image, e.map, e.class_name, e.confidence, method)
    return captioned(gradient_image(e.rgb), f"{e.class_name}  p={e.confidence:.2f}\n{method}",
                     width=max(224, image.shape[1]))


def grid(tiles: list[Image.Image], columns: int, pad: int = 4) -> Image.Image:
    """Tiles (any sizes) on a white grid, row-major."""
    if not tiles:
        raise ValueError("no tiles")
    w = max(t.width for t in tiles)
    h = max(t.height for t in tiles)
    rows = (len(tiles) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * (w + pad) + pad, rows * (h + pad) + pad), "white")
    for i, t in enumerate(tiles):
        r, c = divmod(i, columns)
        sheet.paste(t, (pad + c * (w + pad), pad + r * (h + pad)))
    return sheet


def save_png(img: Image.Image | np.ndarray, path: str | os.PathLike) -> Path:
    """Write a PNG atomically."""
    return write_bytes(Path(path), png_bytes(img))


def save_overlay(image: np.ndarray, cam: np.ndarray, path: str | os.PathLike,
                 alpha: float = ALPHA) -> Path:
    """Write a heat-map overlay PNG of ``cam`` (h, w in [0, 1]) on ``image`` (S, S, 3 uint8).

    Returns:
        The PNG path (``labtf predict --saliency``).
    """
    return save_png(overlay(image, np.asarray(cam, np.float32), alpha), path)


def save_npy(arr: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a .npy atomically."""
    buf = io.BytesIO()
    np.save(buf, arr)
    return write_bytes(Path(path), buf.getvalue())


def png_bytes(img: Image.Image | np.ndarray) -> bytes:
    """PNG-encoded bytes of an image (for embedding)."""
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def poster_panel(explainer, image: np.ndarray, class_names: list[str | None]) -> Image.Image:
    """The poster's panel: image | Grad-CAM | Guided Backprop | Guided Grad-CAM, one row per class.

    Args:
        explainer: a :class:`labtf.explain.core.Explainer`.
        image: uint8 (S, S, 3) model input.
        class_names: ``None`` for the top prediction, or class names.

    Returns:
        The panel image.
    """
    tiles = []
    for name in class_names:
        cam = explainer.explain(image, "gradcam", name)
        gb = explainer.explain(image, "guided", name)
        ggc = explainer.explain(image, "guided-gradcam", name)
        head = f"{cam.class_name} p={cam.confidence:.2f}" + (" (top)" if name is None else "")
        tiles += [captioned(image, f"image\n{head}", 224),
                  captioned(overlay(image, cam.map), "Grad-CAM", 224),
                  captioned(gradient_image(gb.rgb), "Guided Backprop", 224),
                  captioned(gradient_image(ggc.rgb), "Guided Grad-CAM", 224)]
    return grid(tiles, 4)
