"""Scores of saliency maps, shared by ``labtf explain-eval`` and its sanity checks.

Numpy/scipy only: the area under a curve, deletion/insertion curves (RISE,
Petsiuk et al. 2018) for a batch of images, Spearman rho between maps, and the
pointing game / energy in an object mask; plus :class:`ScoreTally`, which
keeps one row of scalars per image (never the maps) and summarises them on all
images, on the correct predictions and per class.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

#: A randomization test passes when the mean Spearman rho is below this.
SANITY_RHO = 0.5
#: Pointing game: the map's peak within this many pixels of the object counts as a hit.
POINTING_TOLERANCE = 15


def auc(curve: np.ndarray) -> float:
    """Area under a curve sampled evenly on [0, 1] (trapezoid rule)."""
    curve = np.asarray(curve, np.float64)
    return float(((curve[1:] + curve[:-1]) / 2).sum() / (len(curve) - 1))


def deletion_insertion_batch(predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray,
                             maps: np.ndarray, targets: list[int], steps: int = 16,
                             blur_sigma: float | None = None,
                             fill: np.ndarray | float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Deletion and insertion curves of a batch of images and their maps.

    Args:
        predict: float32 batch (M, S, S, 3) 0..255 -> probabilities (M, C); it is
            given the ``2 * (steps + 1)`` perturbed copies of every image at once.
        images: (N, S, S, 3) in 0..255.
        maps: (N, S, S) maps; higher = more important (ties keep raster order).
        targets: class index per image whose probability is tracked.
        steps: number of equal pixel chunks.
        blur_sigma: Gaussian sigma (px) of the insertion start; default S / 45.
        fill: the RGB value deleted pixels get.

    Returns:
        ``(deletion, insertion)``, each (N, steps + 1): probabilities at 0, 1/steps, ..., 1
        of the pixels.
    """
    from scipy.ndimage import gaussian_filter

    n, h, w = maps.shape
    sigma = blur_sigma if blur_sigma is not None else h / 45.0
    counts = np.linspace(0, h * w, steps + 1).round().astype(int)
    batch = np.empty((n, steps + 1, 2, h * w, 3), np.float32)
    for j in range(n):
        image = np.asarray(images[j], np.float32)
        flat_img = image.reshape(-1, 3)
        flat_blur = gaussian_filter(image, sigma=(sigma, sigma, 0)).reshape(-1, 3)
        order = np.argsort(-np.asarray(maps[j]).ravel(), kind="stable")
        for s, k in enumerate(counts):
            sel = order[:k]
            d, i = batch[j, s, 0], batch[j, s, 1]
            d[:] = flat_img
            d[sel] = fill
            i[:] = flat_blur
            i[sel] = flat_img[sel]
    probs = np.asarray(predict(batch.reshape(-1, h, w, 3))).reshape(n, steps + 1, 2, -1)
    picked = probs[np.arange(n), :, :, np.asarray(targets, int)]   # (n, steps + 1, 2)
    return picked[:, :, 0], picked[:, :, 1]


def deletion_insertion(predict: Callable[[np.ndarray], np.ndarray], image: np.ndarray,
                       saliency: np.ndarray, target: int, steps: int = 16,
                       blur_sigma: float | None = None,
                       fill: np.ndarray | float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Deletion and insertion curves of one image (S, S, 3) and map (S, S).

    See :func:`deletion_insertion_batch`; returns two (steps + 1,) curves.
    """
    d, i = deletion_insertion_batch(predict, image[None], np.asarray(saliency)[None], [target],
                                    steps, blur_sigma, fill)
    return d[0], i[0]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps (0 when either is constant)."""
    from scipy.stats import spearmanr

    a, b = np.ravel(a), np.ravel(b)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a, b).statistic)


def mask_scores(saliency: np.ndarray, mask: np.ndarray,
                tolerance: int = POINTING_TOLERANCE) -> tuple[bool, float]:
    """Pointing-game hit (peak within ``tolerance`` px of the mask) and energy inside the mask."""
    from scipy.ndimage import distance_transform_edt

    dist = distance_transform_edt(~mask)
    peak = np.unravel_index(int(np.argmax(saliency)), saliency.shape)
    total = float(saliency.sum())
    energy = float(saliency[mask].sum() / total) if total > 0 else 0.0
    return bool(dist[peak] <= tolerance), energy


def load_mask(mask_dir: Path, image_path: str, size: int, resize: str) -> np.ndarray | None:
    """The mask of an image (same stem, any image suffix) as bool (S, S), or None."""
    from labtf.images import IMAGE_SUFFIXES, load_rgb, to_square

    for suffix in IMAGE_SUFFIXES:
        p = Path(mask_dir) / f"{Path(image_path).stem}{suffix}"
        if p.is_file():
            m = to_square(load_rgb(p), size, resize).max(axis=-1) > 127
            return m if m.any() else None
    return None


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


class ScoreTally:
    """Per-image scalars of one method (a few floats per image; no maps).

    Args:
        classes: class names in index order (for :meth:`summary`'s ``per_class``).
    """

    def __init__(self, classes: list[str]) -> None:
        self.classes = classes
        self.rows: list[dict] = []
        self.seconds: list[float] = []

    def add(self, label: int, correct: bool, deletion: float, insertion: float,
            hit: bool | None = None, energy: float | None = None) -> None:
        """One image: its true class index, whether the top class is right, its scores."""
        self.rows.append({"label": label, "correct": bool(correct), "deletion": deletion,
                          "insertion": insertion, "hit": hit, "energy": energy})

    def summary(self) -> dict:
        """Means on all images; pointing/energy also on correct predictions and per class."""
        rows = self.rows
        correct = [r for r in rows if r["correct"]]
        per_class = {}
        for i, c in enumerate(self.classes):
            mine = [r for r in rows if r["label"] == i]
            if mine:
                per_class[c] = {"n": len(mine), "n_masks": sum(r["hit"] is not None for r in mine),
                                "pointing": _mean(r["hit"] for r in mine),
                                "energy": _mean(r["energy"] for r in mine)}
        return {"deletion": _mean(r["deletion"] for r in rows),
                "insertion": _mean(r["insertion"] for r in rows),
                "seconds_per_image": float(np.median(self.seconds)) if self.seconds else None,
                "pointing": _mean(r["hit"] for r in rows),
                "energy": _mean(r["energy"] for r in rows),
                "pointing_correct": _mean(r["hit"] for r in correct),
                "energy_correct": _mean(r["energy"] for r in correct),
                "per_class": per_class}
