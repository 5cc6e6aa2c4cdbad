"""TF-Lite export: float32, float16 weights, or full-integer int8.

The file is self-describing with standard TFLite Metadata
(:mod:`exporters.tflite_metadata`, what MediaPipe Tasks and the TF-Lite Task
library read): input ImageProperties RGB + NormalizationOptions mean 0 / std 1,
output tensor metadata with ``labels.txt`` as TENSOR_AXIS_LABELS, name / version /
author / licence, and ``labtf.json`` (input size, resize mode, quantisation,
source run) as a model-level associated file; the associated files are a STORED
zip after the flatbuffer (``unzip -l model.tflite``). :func:`read_embedded`
reads them, and also the plain appended zip of artifacts from before the metadata.

Beside each CAM model the exporter writes a classifier-only twin
``model_<tag>_classifier.tflite`` (probabilities only, same weights and
quantisation): MediaPipe's ImageClassifier treats every output as a
classification head, so the CAM output cannot be in the file it loads.

Signature ``serving_default``: input ``image`` (N,S,S,3) float32 RGB 0..255
(uint8/int8 with ``io_type``), outputs ``probabilities`` and ``cam``. In the
full-integer model the CAM is the ReLU'd map before the per-image max scaling
(``labtf.json`` says ``"cam_normalized": false``): an int8 DIV aborts when the
map is all zero, so the reader (:class:`TFLitePredictor`) divides by the max.

int8 weights are rounded adaptively by default (:mod:`exporters.int8_rounding`:
each conv weight goes to the grid point below or above that keeps the layer's
output closest to float, then bias correction); ``int8_rounding="nearest"``
leaves rounding to the converter.
"""
from __future__ import annotations

import json
import logging
import os
import zipfile
from pathlib import Path

import numpy as np

from exporters import Option, require, takes_options
from exporters.common import (META_NAME, ArtifactPredictor, check_target, has_suffix,
                              load_images, run_meta, split_samples, tf_function, write_bytes)
from labtf.errors import LabtfError

log = logging.getLogger(__name__)

QUANTIZE = ("none", "float16", "int8")
IO_TYPES = ("float32", "uint8", "int8")
#: int8 weight rounding: ``adaptive`` (exporters.int8_rounding) or the converter's ``nearest``.
ROUNDING = ("adaptive", "nearest")
#: Calibration images the adaptive rounding looks at (the first of the calibration set).
ROUNDING_IMAGES = 32

#: Options of :func:`export_tflite` (besides quantize and overwrite).
OPTIONS = {
    "io_type": Option("float32", (str,), "int8 input/output type: " + " | ".join(IO_TYPES)),
    "calibration_images": Option(100, (int,), "int8: train-split images for calibration"),
    "int8_rounding": Option("adaptive", (str,), "int8 weights: " + " | ".join(ROUNDING)),
    "with_cam": Option(True, (bool,), "include the CAM output"),
    "classifier_twin": Option(True, (bool,), "also write the probabilities-only twin"),
    "version": Option(1, (str, int), "TFLite Metadata version"),
    "author": Option("labtf", (str,), "TFLite Metadata author"),
    "license": Option("unspecified", (str,), "TFLite Metadata licence"),
    "batch": Option(None, (int,), "fixed batch dimension (None: dynamic)"),
}


def artifact_name(quantize: str, with_cam: bool = True) -> str:
    """File name for a quantisation mode (``_classifier``: probabilities only)."""
    tag = {"none": "fp32", "float16": "fp16", "int8": "int8"}[quantize]
    return f"model_{tag}{'' if with_cam else '_classifier'}.tflite"


def saved_model_converter(export_model, image_size: int, batch: int | None = None):
    """A TFLiteConverter over the export model's ``serving_default`` SavedModel.

    ``batch`` fixes the batch dimension (1 for runtimes that refuse a dynamic one, such as
    LiteRT.js); ``None`` leaves it dynamic.

    Returns:
        (temporary folder holding the SavedModel, to ``cleanup()`` after converting;
        the converter, not yet configured).
    """
    import tempfile

    import keras
    import tensorflow as tf

    _, spec = tf_function(export_model, image_size, batch)
    tmp = tempfile.TemporaryDirectory(prefix="labtf_tflite_")
    archive = keras.export.ExportArchive()
    archive.track(export_model)
    archive.add_endpoint("serving_default", lambda image: export_model(image, training=False),
                         input_signature=[spec])
    archive.write_out(tmp.name, verbose=False)
    return tmp, tf.lite.TFLiteConverter.from_saved_model(tmp.name, ["serving_default"])


def int8_model(run, representative, rounding: str = "adaptive", reference=None):
    """The run's Keras model, prepared for int8 conversion.

    Args:
        run: a :class:`labtf.run.Run`.
        representative: float32 (N,S,S,3) calibration images.
        rounding: ``adaptive`` (conv weights rounded by :mod:`exporters.int8_rounding` on
            the first :data:`ROUNDING_IMAGES` images) or ``nearest`` (left to the converter).
        reference: the run's model already loaded (the float targets), to save a load.

    Returns:
        A freshly loaded model (weights moved when ``adaptive``).
    """
    model = run.load_model()
    if rounding == "adaptive":
        from exporters.int8_rounding import round_weights

        log.info("int8 adaptive rounding on %d calibration images",
                 min(ROUNDING_IMAGES, len(representative)))
        round_weights(model, reference if reference is not None else run.load_model(),
                      representative[:ROUNDING_IMAGES])
    return model


def convert(export_model, image_size: int, quantize: str = "none", io_type: str = "float32",
            representative=None, batch: int | None = None) -> bytes:
    """Convert a Keras export model to TF-Lite flatbuffer bytes.

    Args:
        export_model: from :func:`labtf.cam_head.build_export_model`.
        image_size: input side.
        quantize: ``none``, ``float16`` or ``int8``.
        io_type: input/output type for int8 (``float32`` keeps float I/O).
        representative: float32 (N,S,S,3) calibration images (int8 only).
        batch: fixed batch size of the input (``None``: dynamic).

    Raises:
        LabtfError: bad option combination.
    """
    import numpy as np
    import tensorflow as tf

    if quantize not in QUANTIZE:
        raise LabtfError(f"unknown --quantize '{quantize}' for tflite; choose one of: "
                         f"{', '.join(QUANTIZE)}")
    if io_type not in IO_TYPES:
        raise LabtfError(f"unknown --io-type '{io_type}'; choose one of: {', '.join(IO_TYPES)}")
    if io_type != "float32" and quantize != "int8":
        raise LabtfError("--io-type uint8/int8 needs --quantize int8")
    tmp, converter = saved_model_converter(export_model, image_size, batch)
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        if representative is None or len(representative) == 0:
            raise LabtfError("int8 quantisation needs representative images")

        def data():
            for img in representative:
                yield [np.asarray(img[None], np.float32)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = data
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if io_type != "float32":
            converter.inference_input_type = getattr(tf, io_type)
            converter.inference_output_type = getattr(tf, io_type)
    from labtf.quiet_stderr import quiet_native

    try:
        with quiet_native():        # "fully_quantize: ...", absl lines of the MLIR passes
            return converter.convert()
    except Exception as exc:  # converter errors are long MLIR dumps
        first = str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else type(exc).__name__
        raise LabtfError(f"TF-Lite conversion failed: {first}") from exc
    finally:
        tmp.cleanup()


def embed(flatbuffer: bytes, labels: list[str], meta: dict, *, name: str, version: str,
          author: str, license: str) -> bytes:
    """TFLite Metadata + STORED associated files (labels.txt, labtf.json) on a flatbuffer."""
    from exporters.tflite_metadata import write_metadata

    outputs = meta.get("outputs", {})
    return write_metadata(
        flatbuffer, labels=labels, name=name, version=version, author=author, license=license,
        description=f"labtf image classifier ({meta.get('backbone')}, {len(labels)} classes, "
                    f"{meta.get('quantize')}); input RGB 0..255, preprocessing in the model",
        output_descriptions={k: outputs[k] for k in ("probabilities", "cam") if k in outputs},
        extra_files={META_NAME: (json.dumps(meta, indent=2) + "\n").encode()})


def read_embedded(path: str | Path) -> dict:
    """The ``labtf.json`` of a .tflite, with ``classes`` from the TFLite Metadata labels.

    Artifacts written before the metadata (a plain zip appended to the flatbuffer)
    are read from that zip.

    Raises:
        LabtfError: the file carries no labels (not exported by labtf).
    """
    from exporters.tflite_metadata import read_metadata

    hint = (f"{path}: no labels embedded (not exported by labtf); re-export it "
            "with 'labtf export RUN --format tflite'")
    try:
        md = read_metadata(path)
    except (LabtfError, ValueError, IndexError, TypeError):
        md = None
    if md is not None and md.labels:
        try:
            meta = json.loads(md.files[META_NAME]) if META_NAME in md.files else {}
        except ValueError:
            meta = {}
        meta["classes"] = md.labels
        if "image_size" not in meta and md.inputs and md.inputs[0].image_size:
            meta["image_size"] = md.inputs[0].image_size[0]
        if "image_size" not in meta:
            raise LabtfError(hint)
        return meta
    try:
        with zipfile.ZipFile(path) as zf:
            meta = json.loads(zf.read(META_NAME))
            meta["classes"] = [c for c in zf.read("labels.txt").decode().splitlines() if c]
            return meta
    except (zipfile.BadZipFile, KeyError, ValueError, OSError):
        raise LabtfError(hint) from None


@takes_options("tflite", OPTIONS)
def export_tflite(run, path: str | Path, *, quantize: str = "none", overwrite: bool = False,
                  io_type: str = "float32", calibration_images: int = 100,
                  int8_rounding: str = "adaptive", with_cam: bool = True,
                  classifier_twin: bool = True, version: str | int = 1, author: str = "labtf",
                  license: str = "unspecified", batch: int | None = None) -> Path:
    """Export ``run`` to ``<path>/model_<fp32|fp16|int8>.tflite`` (+ a classifier twin).

    Args:
        run: a :class:`labtf.run.Run`.
        path: output folder.
        quantize: ``none`` (float32), ``float16`` or ``int8`` (full integer).
        io_type: ``float32``, ``uint8`` or ``int8`` input/output (int8 only; MediaPipe
            takes float32 or uint8).
        calibration_images: train-split images for int8 calibration.
        int8_rounding: ``adaptive`` (choose each conv weight's rounding to keep layer
            outputs close, :mod:`exporters.int8_rounding`) or ``nearest``.
        with_cam: include the CAM output.
        classifier_twin: with the CAM, also write ``model_<tag>_classifier.tflite``
            (probabilities only: the file MediaPipe's ImageClassifier loads).
        overwrite: replace existing files.
        version, author, license: TFLite Metadata fields.
        batch: fix the input's batch dimension (``None``: dynamic; the web app needs 1).

    Returns:
        The .tflite path (the CAM model when ``with_cam``).

    Raises:
        LabtfError: a file exists, bad options, or conversion failed.
    """
    from labtf.cam_head import build_export_model

    if int8_rounding not in ROUNDING:
        raise LabtfError(f"unknown --int8-rounding '{int8_rounding}'; choose one of: "
                         f"{', '.join(ROUNDING)}")
    variants = [with_cam] + ([False] if with_cam and classifier_twin else [])
    targets = [Path(path) / artifact_name(quantize, cam) for cam in variants]
    for target in targets:
        check_target(target, overwrite)
    meta = run.meta
    size, mode = int(meta["image_size"]), meta.get("resize", "crop")
    representative = None
    if quantize == "int8":
        samples = split_samples(run, "train", calibration_images)
        representative, _ = load_images(samples, size, mode)
        log.info("int8 calibration on %d train images", len(representative))
    rounding = int8_rounding if quantize == "int8" else None
    model = int8_model(run, representative, rounding) if rounding else run.load_model()
    normalize = quantize != "int8"   # int8 DIV aborts on an all-zero map: the reader scales it
    name = f"labtf {meta.get('backbone')} {Path(run.path).name}"
    for cam, target in zip(variants, targets):
        export_model = build_export_model(model, meta.get("cam_layer"), with_cam=cam,
                                          normalize_cam=normalize)
        flat = convert(export_model, size, quantize, io_type, representative, batch)
        info = run_meta(run, "tflite", quantize=quantize, io_type=io_type, with_cam=cam,
                        cam_normalized=normalize, int8_rounding=rounding, batch=batch)
        if not cam:
            info["outputs"] = {"probabilities": info["outputs"]["probabilities"]}
        data = embed(flat, run.classes, info, name=name, version=str(version), author=author,
                     license=license)
        write_bytes(target, data, overwrite=overwrite)
        log.debug("TF-Lite written: %s (%.1f MB)", target, target.stat().st_size / 1e6)
    return targets[0]


def detect(path: Path) -> bool:
    """``path`` is a ``.tflite`` file."""
    return has_suffix(path, ".tflite")


class TFLitePredictor(ArtifactPredictor):
    """A labtf ``.tflite`` run with ai-edge-litert's Interpreter."""

    def __init__(self, path: Path, num_threads: int | None = None) -> None:
        self._set_meta(read_embedded(path), path)
        mod = require("ai_edge_litert.interpreter", extra="tflite", what="a .tflite model")
        from labtf.quiet_stderr import quiet_native

        with quiet_native():        # the XNNPACK notice, once per interpreter
            self.interpreter = mod.Interpreter(model_path=str(path),
                                               num_threads=num_threads or os.cpu_count())
            self.interpreter.allocate_tensors()
            self.runner = self.interpreter.get_signature_runner("serving_default")
        self.inputs = self.runner.get_input_details()
        self.outputs = self.runner.get_output_details()
        self._batch = None

    @staticmethod
    def _quantize(x: np.ndarray, d: dict) -> np.ndarray:
        if d["dtype"] == np.float32:
            return x.astype(np.float32)
        scale, zero = d["quantization"]
        info = np.iinfo(d["dtype"])
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(d["dtype"])

    @staticmethod
    def _dequantize(y: np.ndarray, d: dict) -> np.ndarray:
        if d["dtype"] == np.float32:
            return y
        scale, zero = d["quantization"]
        return ((y.astype(np.float32) - zero) * scale).astype(np.float32)

    def _run(self, images):
        signature = self.inputs["image"].get("shape_signature", self.inputs["image"]["shape"])
        if signature[0] == 1 and len(images) > 1:  # fixed batch 1 (the web export): one by one
            parts = [self._run(images[i:i + 1]) for i in range(len(images))]
            cams = [c for _, c in parts]
            return (np.concatenate([p for p, _ in parts]),
                    None if cams[0] is None else np.concatenate(cams))
        x = self._quantize(np.asarray(images, np.float32), self.inputs["image"])
        out = self.runner(image=x)
        probs = self._dequantize(out["probabilities"], self.outputs["probabilities"])
        cam = self._dequantize(out["cam"], self.outputs["cam"]) if "cam" in out else None
        if cam is not None and not self.meta.get("cam_normalized", True):
            from labtf.maps import normalize_maps

            cam = normalize_maps(cam)
        return probs.astype(np.float64), cam


#: FORMATS["tflite"].open
open_artifact = TFLitePredictor
