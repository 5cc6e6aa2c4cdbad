"""Predict labels for image files through one :class:`Predictor` interface.

A predictor takes a batch of square RGB pixels (0..255) and returns class
probabilities. :func:`open_predictor` picks the implementation by what the
path is: a run folder first, then each ``exporters.FORMATS`` entry's
``detect``/``open`` in table order. A bad file in a batch gives a per-file
error; the rest are still predicted.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from labtf.errors import LabtfError
from labtf.images import BadImage, load_rgb, to_square
from labtf.predictor_base import Predictor  # noqa: F401  (re-exported: the interface)

log = logging.getLogger(__name__)


class KerasPredictor(Predictor):
    """A trained run folder (``model.keras``)."""

    def __init__(self, path: str | os.PathLike) -> None:
        from labtf.run import Run

        run = Run.open(path)
        self.run = run
        self.classes = run.classes
        self.image_size = int(run.meta["image_size"])
        self.resize = run.meta.get("resize", "crop")
        self.model = run.load_model()

    has_cam = True

    def predict_batch(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(images.astype(np.float32), verbose=0), np.float64)

    def predict_batch_with_cam(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if getattr(self, "_cam_model", None) is None:
            from labtf.cam_head import build_export_model

            self._cam_model = build_export_model(self.model, self.run.meta.get("cam_layer"))
        out = self._cam_model(images.astype(np.float32), training=False)
        return (np.asarray(out["probabilities"], np.float64), np.asarray(out["cam"], np.float32))


def _is_run(path: Path) -> bool:
    return path.is_dir() and (path / "model.keras").is_file()


#: What :func:`open_predictor` says a run folder is, before the formats' ``artifact`` lines.
RUN_KIND = "a labtf run folder (model.keras)"


def open_predictor(path: str | os.PathLike) -> Predictor:
    """Open whatever ``path`` is (run folder or exported artifact) as a Predictor.

    The run folder is tried first, then every ``exporters.FORMATS`` entry (first
    ``detect`` that matches wins).

    Raises:
        LabtfError: nothing at ``path``, or nothing labtf can run.
    """
    path = Path(path)
    if not path.exists():
        raise LabtfError(f"{path} does not exist; pass a run folder or an exported model")
    log.info("loading the model in %s (the runtime's start-up takes a few seconds)", path)
    if _is_run(path):
        return KerasPredictor(path)
    from exporters import FORMATS

    for spec in FORMATS.values():
        if spec.detect(path):
            return spec.open(path)
    kinds = "; ".join([RUN_KIND, *(spec.artifact for spec in FORMATS.values())])
    raise LabtfError(f"{path} is not something labtf can predict with; expected {kinds}")


@dataclass
class Prediction:
    """The result for one file: top-k (label, probability) or an error line."""

    path: str
    top: list[tuple[str, float]] = field(default_factory=list)
    error: str = ""
    cam: np.ndarray | None = None

    @property
    def label(self) -> str:
        return self.top[0][0] if self.top else ""

    @property
    def confidence(self) -> float:
        return self.top[0][1] if self.top else 0.0


def predict_files(predictor: Predictor, paths: list[str], top_k: int = 1,
                  batch_size: int = 16, with_cam: bool = False) -> list[Prediction]:
    """Predict every file; unreadable ones get ``error`` and the rest go on.

    Args:
        predictor: an opened predictor.
        paths: image files.
        top_k: how many (label, probability) pairs to keep per image.
        batch_size: images per model call.
        with_cam: also fill ``Prediction.cam`` (the predictor must have a CAM).

    Returns:
        One :class:`Prediction` per path, in order.
    """
    k = max(1, min(top_k, len(predictor.classes)))
    results = [Prediction(str(p)) for p in paths]
    good: list[tuple[int, np.ndarray]] = []
    for i, p in enumerate(paths):
        try:
            good.append((i, to_square(load_rgb(p), predictor.image_size, predictor.resize)))
        except BadImage as exc:
            results[i].error = str(exc)
    for start in range(0, len(good), batch_size):
        chunk = good[start:start + batch_size]
        batch = np.stack([img for _, img in chunk]).astype(np.float32)
        if with_cam:
            probs, cams = predictor.predict_batch_with_cam(batch)
        else:
            probs, cams = predictor.predict_batch(batch), [None] * len(chunk)
        for (i, _), row, cam in zip(chunk, probs, cams):
            results[i].cam = cam
            order = np.argsort(-row)[:k]
            results[i].top = [(predictor.classes[j], float(row[j])) for j in order]
    return results
