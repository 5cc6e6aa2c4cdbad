"""ONNX export via tf2onnx from the export model's concrete function.

Input ``image`` float32 (N,S,S,3) RGB 0..255 (NHWC, dynamic batch); outputs
``probabilities`` and ``cam``. Labels and the input contract are stored in the
model's ``metadata_props`` (keys ``labels`` (JSON list) and ``labtf``).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from exporters import Option, require, takes_options
from exporters.common import (ArtifactPredictor, check_target, has_suffix, run_meta, tf_function,
                              write_bytes)
from labtf.errors import LabtfError

log = logging.getLogger(__name__)

OPSET = 17

#: Options of :func:`export_onnx` (besides quantize and overwrite).
OPTIONS = {"opset": Option(OPSET, (int,), "ONNX opset")}


def to_onnx(export_model, image_size: int, opset: int = OPSET, batch: int | None = None,
            metadata: dict | None = None):
    """Convert a Keras export model to an ``onnx.ModelProto``.

    Args:
        export_model: from :func:`labtf.cam_head.build_export_model`.
        image_size: input side.
        opset: ONNX opset.
        batch: fixed batch size, or ``None`` for dynamic.
        metadata: string key/values for ``metadata_props``.

    Raises:
        LabtfError: the conversion failed.
    """
    import tf2onnx

    fn, spec = tf_function(export_model, image_size, batch)
    try:
        proto, _ = tf2onnx.convert.from_function(fn, input_signature=[spec], opset=opset)
    except Exception as exc:
        raise LabtfError(f"ONNX conversion failed: {type(exc).__name__}: {exc}") from exc
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto


@takes_options("onnx", OPTIONS)
def export_onnx(run, path: str | Path, *, quantize: str = "none", overwrite: bool = False,
                opset: int = OPSET) -> Path:
    """Export ``run`` to ``<path>/model.onnx``.

    Args:
        run: a :class:`labtf.run.Run`.
        path: output folder.
        quantize: ``none`` only (float32).
        overwrite: replace an existing file.
        opset: ONNX opset.

    Returns:
        The .onnx path.

    Raises:
        LabtfError: the file exists or conversion failed.
    """
    from labtf.cam_head import build_export_model

    target = Path(path) / "model.onnx"
    check_target(target, overwrite)
    meta = run.meta
    export_model = build_export_model(run.load_model(), meta.get("cam_layer"))
    info = run_meta(run, "onnx", opset=opset)
    proto = to_onnx(export_model, int(meta["image_size"]), opset,
                    metadata={"labels": json.dumps(run.classes), "labtf": json.dumps(info)})
    write_bytes(target, proto.SerializeToString(), overwrite=overwrite)
    log.debug("ONNX written: %s", target)
    return target


def read_metadata(path: str | Path) -> dict:
    """The ``labtf`` metadata of an exported .onnx (classes included).

    Raises:
        LabtfError: the file carries no labtf metadata.
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    if "labtf" not in props:
        raise LabtfError(f"{path}: no labtf metadata (not exported by labtf)")
    meta = json.loads(props["labtf"])
    meta["classes"] = json.loads(props.get("labels", json.dumps(meta.get("classes", []))))
    return meta


def detect(path: Path) -> bool:
    """``path`` is an ``.onnx`` file."""
    return has_suffix(path, ".onnx")


class ONNXPredictor(ArtifactPredictor):
    """A labtf ``.onnx`` run with onnxruntime (CPU, or CUDA when available)."""

    def __init__(self, path: Path, num_threads: int | None = None) -> None:
        require("onnx", extra="onnx", what="an .onnx model")
        self._set_meta(read_metadata(path), path)
        ort = require("onnxruntime", extra="onnx", what="an .onnx model")
        opts = ort.SessionOptions()
        if num_threads:
            opts.intra_op_num_threads = num_threads
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                     if p in ort.get_available_providers()]
        self.session = ort.InferenceSession(str(path), opts, providers=providers)

    def _run(self, images):
        probs, cam = self.session.run(["probabilities", "cam"],
                                      {"image": np.asarray(images, np.float32)})
        return probs.astype(np.float64), cam


#: FORMATS["onnx"].open
open_artifact = ONNXPredictor
