"""Planted near-duplicates for measuring detection: resized, re-encoded, cropped, colour-shifted.

Used by the tests and ``benchmarks/collect_bench.py`` to score near-duplicate
detection (precision and recall over image pairs) against a known truth.
"""
from __future__ import annotations

import io
from itertools import combinations

import numpy as np
from PIL import Image, ImageEnhance

from labtf.images import to_rgb

VARIANTS = ("resized", "reencoded", "cropped", "colour")


def make_variant(img: Image.Image, kind: str, rng: np.random.Generator) -> Image.Image:
    """One altered copy of ``img``.

    Args:
        img: source image (any mode).
        kind: one of :data:`VARIANTS`.
        rng: randomness for the amounts.

    Returns:
        An RGB image.

    Raises:
        ValueError: unknown kind.
    """
    img = to_rgb(img)
    w, h = img.size
    if kind == "resized":
        s = float(rng.uniform(0.35, 0.7))
        return img.resize((max(16, round(w * s)), max(16, round(h * s))), Image.BICUBIC)
    if kind == "reencoded":
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=int(rng.integers(25, 50)))
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    if kind == "cropped":
        f = rng.uniform(0.02, 0.06, 4)
        box = (round(w * f[0]), round(h * f[1]), w - round(w * f[2]), h - round(h * f[3]))
        return img.crop(box)
    if kind == "colour":
        a = np.asarray(img, dtype=np.float32)
        gains = rng.uniform(0.85, 1.15, 3)
        a = np.clip(a * gains + rng.uniform(-15, 15), 0, 255).astype(np.uint8)
        out = Image.fromarray(a)
        return ImageEnhance.Color(out).enhance(float(rng.uniform(0.7, 1.3)))
    raise ValueError(f"unknown variant '{kind}'; choose one of {VARIANTS}")


def pair_scores(groups_of: list[int], truth_of: list[int]) -> dict:
    """Pair-level precision and recall of predicted groups against true groups.

    Args:
        groups_of: predicted group id per item (-1: alone).
        truth_of: true source id per item (-1: alone).

    Returns:
        ``precision``, ``recall``, ``true_pairs``, ``predicted_pairs``, ``correct_pairs``.
    """
    def pairs(of: list[int]) -> set[tuple[int, int]]:
        by: dict[int, list[int]] = {}
        for i, g in enumerate(of):
            if g >= 0:
                by.setdefault(g, []).append(i)
        return {p for m in by.values() for p in combinations(sorted(m), 2)}

    pred, true = pairs(groups_of), pairs(truth_of)
    hit = len(pred & true)
    return {"precision": hit / len(pred) if pred else 1.0, "recall": hit / len(true) if true else 1.0,
            "true_pairs": len(true), "predicted_pairs": len(pred), "correct_pairs": hit}
