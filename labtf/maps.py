"""Numpy-only helpers for saliency maps (safe to import on a device without TensorFlow)."""
from __future__ import annotations

import numpy as np

#: How :func:`normalize_maps` sets a map's 0: its own minimum, or 0 after a ReLU.
FLOORS = ("min", "zero")


def normalize_maps(maps: np.ndarray, *, floor: str = "zero") -> np.ndarray:
    """Scale each map of a batch (N, ...) to [0, 1], in float32.

    NaN counts as 0. ``floor="zero"`` (CAM outputs of exported models): negatives are
    cut (ReLU) and each map is divided by its peak; a map with no positive value stays
    all zero. ``floor="min"`` (labtf explain): per-map min-max; a constant map becomes 0.

    Args:
        maps: a batch of maps, any float or int dtype, one map per leading index.
        floor: ``zero`` or ``min`` (above).

    Returns:
        float32 maps of the same shape in [0, 1].

    Raises:
        ValueError: unknown ``floor``.
    """
    if floor not in FLOORS:
        raise ValueError(f"unknown floor '{floor}'; choose one of: {', '.join(FLOORS)}")
    maps = np.nan_to_num(np.asarray(maps, np.float32))
    axes = tuple(range(1, maps.ndim))
    if floor == "zero":
        maps = np.maximum(maps, np.float32(0.0))
        lo = np.float32(0.0)
    else:
        lo = maps.min(axis=axes, keepdims=True)
    span = (maps.max(axis=axes, keepdims=True) - lo).astype(np.float64)
    return ((maps - lo) / np.where(span > 0, span, np.inf)).astype(np.float32)  # span 0: all 0


def pearson_r(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two maps; NaN when either is constant."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else float("nan")
