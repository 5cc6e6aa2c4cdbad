"""TF SavedModel in TF Serving layout ``<base>/<name>/<version>/``.

Signatures (stable names):

* ``serving_default``: ``image_bytes`` tf.string (N,) of encoded JPEG/PNG/GIF/BMP
  -> ``probabilities`` (N,C) float32, ``class_index`` (N,) int64, ``label``
  (N,) string, ``cam`` (N,h,w) float32.
* ``serving_pixels``: ``image`` float32 (N,S,S,3) RGB 0..255, same outputs.

In-graph decode and resize follow :func:`labtf.images.to_square`: the same
output-size arithmetic (round half to even, centre offsets), antialiased
bilinear (Pillow's BILINEAR is a triangle filter scaled by the downsampling
factor, as ``tf.image.resize(antialias=True)``), rounding to uint8 and white
compositing of alpha. Residual differences, measured in
``benchmarks/results/export_parity.md``: libjpeg DCT/upsampling details,
Pillow's ``reducing_gap=3`` box pre-reduction for >= 6x downscales, EXIF
orientation (not applied in-graph), and colour-managed or 16-bit files.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np

from exporters import Option, require, takes_options
from exporters.common import META_NAME, ArtifactPredictor, atomic_dir, run_meta
from labtf.errors import LabtfError

log = logging.getLogger(__name__)

#: Options of :func:`export_saved_model` (besides quantize and overwrite).
OPTIONS = {
    "name": Option(None, (str,), "TF Serving model name [run folder name]"),
    "version": Option(1, (int, str), "integer version folder"),
    "batching": Option(False, (bool, dict), "also write TF Serving's batching.config"),
}


def serving_name(run) -> str:
    """A TF Serving model name from the run folder name (``run``: a Run or its path)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(getattr(run, "path", run)).resolve().name) or "labtf"


def square_in_graph(image, size: int, mode: str):
    """Decoded uint8 (H,W,C) -> float32 (size,size,3) like ``labtf.images.to_square``."""
    import tensorflow as tf

    img = tf.cast(image, tf.float32)
    c = tf.shape(img)[-1]
    rgb = tf.cond(c >= 3, lambda: img[..., :3], lambda: tf.tile(img[..., :1], [1, 1, 3]))
    alpha = tf.cond(tf.logical_or(tf.equal(c, 2), tf.equal(c, 4)),
                    lambda: img[..., -1:] / 255.0, lambda: tf.ones_like(img[..., :1]))
    rgb = tf.round(rgb * alpha + 255.0 * (1.0 - alpha))
    h, w = tf.cast(tf.shape(rgb)[0], tf.float64), tf.cast(tf.shape(rgb)[1], tf.float64)
    s = tf.constant(float(size), tf.float64)

    def resize(nh, nw):
        out = tf.image.resize(rgb, tf.stack([nh, nw]), method="bilinear", antialias=True)
        return tf.clip_by_value(tf.round(out), 0.0, 255.0)

    if mode == "squash":
        return resize(size, size)
    if mode == "crop":
        scale = s / tf.minimum(h, w)
        nh = tf.cast(tf.maximum(s, tf.round(h * scale)), tf.int32)
        nw = tf.cast(tf.maximum(s, tf.round(w * scale)), tf.int32)
        out = resize(nh, nw)
        top, left = (nh - size) // 2, (nw - size) // 2
        return out[top:top + size, left:left + size, :]
    if mode == "pad":
        scale = s / tf.maximum(h, w)
        one = tf.constant(1.0, tf.float64)
        nh = tf.cast(tf.maximum(one, tf.round(h * scale)), tf.int32)
        nw = tf.cast(tf.maximum(one, tf.round(w * scale)), tf.int32)
        out = resize(nh, nw) - 255.0
        out = tf.image.pad_to_bounding_box(out, (size - nh) // 2, (size - nw) // 2, size, size)
        return out + 255.0
    raise LabtfError(f"unknown resize mode '{mode}'")


@takes_options("saved_model", OPTIONS)
def export_saved_model(run, path: str | Path, *, quantize: str = "none", overwrite: bool = False,
                       name: str | None = None, version: int = 1,
                       batching: bool | dict = False) -> Path:
    """Export ``run`` as ``<path>/<name>/<version>/`` for TF Serving.

    Args:
        run: a :class:`labtf.run.Run`.
        path: base folder (TF Serving ``--model_base_path`` parent).
        quantize: ``none`` only (the weights stay float32).
        name: model name [run folder name].
        version: integer version folder.
        overwrite: replace an existing version folder.
        batching: also write TF Serving's ``batching.config`` (True or parameter overrides).

    Returns:
        The version folder (``<path>/models.config`` lists every model under ``path``).

    Raises:
        LabtfError: the version folder exists (without ``overwrite``) or version < 1.
    """
    import keras
    import tensorflow as tf

    from labtf.cam_head import CAM_OUT, PROBS_OUT, build_export_model

    if int(version) < 1:
        raise LabtfError(f"--version must be a positive integer, got {version}")
    target = Path(path) / (name or serving_name(run)) / str(int(version))
    meta = run.meta
    size, mode = int(meta["image_size"]), meta.get("resize", "crop")
    export_model = build_export_model(run.load_model(), meta.get("cam_layer"))
    labels = tf.constant(run.classes)

    def outputs(image):
        out = export_model(image, training=False)
        probs = out[PROBS_OUT]
        index = tf.argmax(probs, axis=-1)
        return {"probabilities": probs, "class_index": index,
                "label": tf.gather(labels, index), "cam": out[CAM_OUT]}

    def from_pixels(image):
        return outputs(image)

    def from_bytes(image_bytes):
        def one(data):
            decoded = tf.io.decode_image(data, channels=0, expand_animations=False)
            return square_in_graph(decoded, size, mode)

        images = tf.map_fn(one, image_bytes, fn_output_signature=tf.TensorSpec(
            [size, size, 3], tf.float32))
        return outputs(images)

    archive = keras.export.ExportArchive()
    archive.track(export_model)
    archive.add_endpoint("serving_default", from_bytes, input_signature=[
        tf.TensorSpec([None], tf.string, name="image_bytes")])
    archive.add_endpoint("serving_pixels", from_pixels, input_signature=[
        tf.TensorSpec([None, size, size, 3], tf.float32, name="image")])
    with atomic_dir(target, overwrite) as tmp:
        archive.write_out(str(tmp), verbose=False)
        extra = tmp / "assets.extra"
        extra.mkdir(exist_ok=True)
        info = run_meta(run, "saved_model", signatures=["serving_default", "serving_pixels"])
        (extra / META_NAME).write_text(json.dumps(info, indent=2) + "\n")
        (extra / "labels.txt").write_text("\n".join(run.classes) + "\n")
    log.debug("SavedModel written: %s", target)
    from labtf.serving.repository import write_repository_config

    write_repository_config(path, batching=batching)
    return target


def find_version_dir(path: Path) -> Path | None:
    """The SavedModel folder at ``path``: itself, or its highest numeric version."""
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return path
    if not path.is_dir():
        return None
    for base in (path, *sorted(p for p in path.iterdir() if p.is_dir())):
        versions = [p for p in base.iterdir() if p.is_dir() and p.name.isdigit()
                    and (p / "saved_model.pb").is_file()] if base.is_dir() else []
        if versions:
            return max(versions, key=lambda p: int(p.name))
        if base is not path:
            break
    return None


def detect(path: Path) -> bool:
    """``path`` is a SavedModel folder (or a TF Serving base/model folder holding one)."""
    return Path(path).is_dir() and find_version_dir(path) is not None


class SavedModelPredictor(ArtifactPredictor):
    """A labtf SavedModel, through its ``serving_pixels`` signature."""

    def __init__(self, path: Path) -> None:
        folder = find_version_dir(path)
        meta_file = folder / "assets.extra" / META_NAME if folder else None
        if meta_file is None or not meta_file.is_file():
            raise LabtfError(f"{path}: not a labtf SavedModel (no assets.extra/labtf.json)")
        self._set_meta(json.loads(meta_file.read_text()), folder)
        tf = require("tensorflow", extra="cpu", what="a SavedModel")
        self.loaded = tf.saved_model.load(str(folder))
        self.serve = self.loaded.signatures["serving_pixels"]
        self.serve_bytes = self.loaded.signatures["serving_default"]

    def _run(self, images):
        out = self.serve(image=np.asarray(images, np.float32))
        return (out["probabilities"].numpy().astype(np.float64), out["cam"].numpy())

    def predict_bytes(self, blobs: list[bytes]) -> dict:
        """Run ``serving_default`` on encoded images (in-graph decode and resize)."""
        import tensorflow as tf

        out = self.serve_bytes(image_bytes=tf.constant(blobs))
        return {k: v.numpy() for k, v in out.items()}


#: FORMATS["saved_model"].open
open_artifact = SavedModelPredictor
