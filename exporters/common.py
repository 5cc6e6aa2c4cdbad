"""Shared pieces of every format: run facts, sample images, safe artifact writes, the
artifact predictor base class."""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from labtf import __version__, fileio
from labtf.errors import LabtfError
from labtf.images import BadImage, load_rgb, to_square
from labtf.predictor_base import Predictor

log = logging.getLogger(__name__)

#: Sidecar/embedded description of an artifact (labels, input contract).
META_NAME = "labtf.json"


def run_meta(run, fmt: str, **extra) -> dict:
    """What an artifact needs to be self-describing: labels and the input contract.

    Args:
        run: the source :class:`labtf.run.Run`.
        fmt: format name.
        **extra: format details (quantize, io types, ...).

    Returns:
        A JSON-able dict.
    """
    meta = run.meta
    return {"format": fmt, "classes": run.classes, "image_size": int(meta["image_size"]),
            "resize": meta.get("resize", "crop"), "cam_layer": meta.get("cam_layer"),
            "backbone": meta.get("backbone"), "input": "RGB float 0..255 (N,S,S,3) named 'image'",
            "outputs": {"probabilities": "(N,C) softmax", "cam": "(N,h,w) top-class CAM in [0,1]"},
            "source_run": str(Path(run.path).resolve()), "labtf": __version__, **extra}


def split_samples(run, split: str, limit: int | None = None):
    """Samples of one split from the run's ``split.csv``.

    Raises:
        LabtfError: the run has no split manifest or the split is empty.
    """
    from labtf.manifest import read_manifest

    manifest = run.file("split.csv")
    if not manifest.is_file():
        raise LabtfError(f"{manifest} is missing; the run folder is incomplete")
    samples = [s for s in read_manifest(manifest, validate=False).samples if s.split == split]
    if not samples:
        raise LabtfError(f"run {run.path} has no '{split}' images in split.csv")
    return samples[:limit] if limit else samples


def load_images(samples, size: int, resize: str) -> tuple[np.ndarray, list]:
    """Decode samples the Python way; unreadable files are skipped with a warning.

    Returns:
        float32 (N, S, S, 3) in 0..255 and the samples kept.
    """
    images, kept = [], []
    for s in samples:
        try:
            images.append(to_square(load_rgb(s.path), size, resize))
            kept.append(s)
        except BadImage as exc:
            log.warning("%s (skipped)", exc)
    if not images:
        raise LabtfError("none of the sample images could be read")
    return np.stack(images).astype(np.float32), kept


def check_target(path: Path, overwrite: bool) -> None:
    """Refuse to replace an existing artifact unless asked to.

    Raises:
        LabtfError: ``path`` exists and ``overwrite`` is False.
    """
    if path.exists() and not overwrite:
        raise LabtfError(f"{path} already exists; pass --overwrite to replace it or choose "
                         "another --out")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextmanager
def atomic_dir(path: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temp folder beside ``path``; on success it replaces ``path`` by rename.

    Raises:
        LabtfError: ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    check_target(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            _remove(old)
            os.replace(path, old)
            os.replace(tmp, path)
            _remove(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_bytes(path: Path, data: bytes, overwrite: bool = False) -> Path:
    """Write a file atomically (temp + os.replace), refusing to overwrite by default."""
    path = Path(path)
    check_target(path, overwrite)
    return fileio.write_bytes(path, data)


def write_sidecar(artifact: Path, meta: dict, overwrite: bool = True) -> Path:
    """Write ``<artifact>.json`` (for formats that cannot embed metadata)."""
    return write_bytes(Path(f"{artifact}.json"), (json.dumps(meta, indent=2) + "\n").encode(),
                       overwrite=overwrite)


def tf_function(export_model, image_size: int, batch: int | None = None):
    """A ``tf.function`` over the export model with input spec ``image``.

    Returns:
        (function, input TensorSpec).
    """
    import tensorflow as tf

    spec = tf.TensorSpec([batch, image_size, image_size, 3], tf.float32, name="image")

    @tf.function(input_signature=[spec])
    def serve(image):
        return export_model(image, training=False)

    return serve, spec


def size_bytes(path: Path) -> int:
    """Size of a file, or of everything under a folder."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def has_suffix(path: Path, *suffixes: str) -> bool:
    """``path`` is a file ending in one of ``suffixes`` (any case): a ``detect`` helper."""
    path = Path(path)
    return path.is_file() and path.suffix.lower() in suffixes


class ArtifactPredictor(Predictor):
    """Base of the format readers: labels and input contract from the artifact's labtf
    metadata; subclasses implement ``_run`` (probabilities, CAM or None)."""

    has_cam = True

    def _set_meta(self, meta: dict, path: Path) -> None:
        self.path = path
        self.meta = meta
        self.classes = list(meta["classes"])
        self.image_size = int(meta["image_size"])
        self.resize = meta.get("resize", "crop")
        self.has_cam = bool(meta.get("with_cam", True))

    def predict_batch(self, images: np.ndarray) -> np.ndarray:
        return self._run(images)[0]

    def predict_batch_with_cam(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not self.has_cam:
            return super().predict_batch_with_cam(images)
        return self._run(images)

    def _run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError
