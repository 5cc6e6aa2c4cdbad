"""Likely-irrelevant or mislabelled images, from a pretrained embedding space.

The poster's curators removed about 3,300 of 9,100 scraped images by eye. This flags the
images a person should look at first, with EfficientNet-Lite0 GAP features
(:mod:`labtf.curate.embed`) and each image's k nearest neighbours (cosine similarity):

- ``closer to another class``: the mean similarity to the k nearest images of some other class
  beats that to the k nearest of its own class by at least ``margin`` (a mislabel, or an image
  of a neighbouring subject);
- ``far from its class``: one minus the mean similarity to its own class' k nearest images is
  an outlier within the class (robust z-score, median and MAD, at least ``z_min``): junk that
  resembles no class.

Flags go to the review page and ``curation/outliers.json``; nothing is moved.
"""
from __future__ import annotations

import numpy as np

#: Neighbours per image, class margin, robust z-score threshold, smallest class scored.
K = 5
MARGIN = 0.05
Z_MIN = 3.5
MIN_CLASS = 8


def _knn_mean(sim: np.ndarray, k: int) -> np.ndarray:
    """Mean of each row's k largest entries."""
    k = min(k, sim.shape[1])
    return np.partition(sim, -k, axis=1)[:, -k:].mean(1)


def class_outliers(embeddings: np.ndarray, labels: list[str], k: int = K, margin: float = MARGIN,
                   z_min: float = Z_MIN, min_class: int = MIN_CLASS) -> list[dict]:
    """Flag images that sit closer to another class, or far from the rest of their own.

    Args:
        embeddings: (N, D) features (L2-normalised here).
        labels: class of each row.
        k: neighbours averaged per image.
        margin: similarity by which another class must win.
        z_min: robust z-score of the own-class distance from which an image is flagged.
        min_class: classes with fewer images are not scored.

    Returns:
        One dict per flagged image, most suspicious first: ``index``, ``label``, ``reason``
        (``closer to another class`` or ``far from its class``), ``own_similarity``,
        ``closest_class``, ``closest_similarity`` (best other class) and ``z``.
    """
    e = np.asarray(embeddings, dtype=np.float32)
    if len(e) == 0:
        return []
    e = e / (np.linalg.norm(e, axis=1, keepdims=True) + 1e-12)
    lab = np.asarray(labels)
    classes = [c for c in sorted(set(labels)) if (lab == c).sum() >= max(min_class, k + 2)]
    if not classes:
        return []
    members = {c: np.nonzero(lab == c)[0] for c in classes}
    # per image: mean similarity to the k nearest of each scored class (itself excluded)
    sims = np.empty((len(e), len(classes)), np.float32)
    for s in range(0, len(e), 512):
        block = e[s:s + 512]
        for ci, c in enumerate(classes):
            sim = block @ e[members[c]].T
            rows = np.nonzero(lab[s:s + 512] == c)[0]
            if len(rows):   # exclude each image from its own neighbours
                cols = np.searchsorted(members[c], s + rows)
                sim[rows, cols] = -np.inf
            sims[s:s + 512, ci] = _knn_mean(sim, k)
    out = []
    for ci, c in enumerate(classes):
        idx = members[c]
        own = sims[idx, ci]
        dist = 1.0 - own
        med = np.median(dist)
        z = (dist - med) / (1.4826 * np.median(np.abs(dist - med)) + 1e-6)
        other = sims[idx].copy()
        other[:, ci] = -np.inf
        best = other.argmax(1)
        best_sim = other[np.arange(len(idx)), best]
        for n, i in enumerate(idx):
            closer = best_sim[n] - own[n] >= margin
            if closer or z[n] >= z_min:
                out.append({"index": int(i), "label": c,
                            "reason": "closer to another class" if closer else "far from its class",
                            "own_similarity": round(float(own[n]), 4),
                            "closest_class": classes[int(best[n])],
                            "closest_similarity": round(float(best_sim[n]), 4),
                            "z": round(float(z[n]), 2)})
    return sorted(out, key=lambda f: (f["own_similarity"] - f["closest_similarity"], -f["z"]))
