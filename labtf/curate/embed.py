"""Optional embedding stage for near-duplicate detection: EfficientNet-Lite0 (offline ImageNet
weights) global-average-pooled features, L2-normalised, one batched forward pass.

Used by :func:`labtf.curate.phash.near_duplicate_pairs` as an extra candidate source (cosine
similarity finds cropped / colour-shifted copies whose hashes drift) and as a verification
signal (look-alike layouts such as flags or card faces correlate in grey but differ in content).
"""
from __future__ import annotations

import logging

import numpy as np
from PIL import Image

from labtf.images import to_rgb, to_square

log = logging.getLogger(__name__)

SIZE = 224
_MODEL = None


def available() -> bool:
    """True when keras (and so the embedding stage) can be imported."""
    try:
        import keras  # noqa: F401
    except Exception:  # pragma: no cover - depends on the install
        return False
    return True


def _model():
    global _MODEL
    if _MODEL is None:
        import keras

        from labtf.backbones import get_backbone
        from labtf.model import GAP, build_classifier

        full = build_classifier(get_backbone("efficientnet_lite0"), 2, weights="imagenet")
        _MODEL = keras.Model(full.input, full.get_layer(GAP).output)
    return _MODEL


def embeddings(images: list[Image.Image], batch: int = 64) -> np.ndarray:
    """L2-normalised float32 embeddings, shape (len(images), 1280); letterboxed to 224 px."""
    if not images:
        return np.zeros((0, 1280), np.float32)
    model = _model()
    out = []
    for s in range(0, len(images), batch):
        x = np.stack([to_square(np.asarray(to_rgb(im)), SIZE, mode="pad") for im in images[s:s + batch]])
        out.append(np.asarray(model.predict_on_batch(x.astype(np.float32)), dtype=np.float32))
    e = np.concatenate(out)
    return e / (np.linalg.norm(e, axis=1, keepdims=True) + 1e-12)


def embed_files(paths: list, batch: int = 64) -> np.ndarray:
    """:func:`embeddings` of image files, opened one batch at a time."""
    out = []
    for s in range(0, len(paths), batch):
        ims = []
        for p in paths[s:s + batch]:
            with Image.open(p) as im:
                im.seek(0)
                ims.append(to_rgb(im).copy())
        out.append(embeddings(ims, batch))
    return np.concatenate(out) if out else np.zeros((0, 1280), np.float32)


def attach(sigs: list, vectors: np.ndarray) -> list:
    """Set ``embedding`` on each signature (in place); returns ``sigs``."""
    for s, v in zip(sigs, vectors):
        s.embedding = v
    return sigs
