"""Numpy-only helpers for saliency maps (safe to import on a device without TensorFlow)."""
from __future__ import annotations

import numpy as np


def normalize_maps(cam: np.ndarray) -> np.ndarray:
    """ReLU and scale each map (N, h, w) to [0, 1]; all-zero maps stay zero."""
    cam = np.maximum(np.asarray(cam, np.float32), 0.0)
    peak = cam.max(axis=(1, 2), keepdims=True)
    return np.where(peak > 0, cam / np.maximum(peak, 1e-30), 0.0).astype(np.float32)


def pearson_r(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two maps; NaN when either is constant."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else float("nan")
