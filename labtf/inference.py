"""Predictors for exported artifacts (:data:`ARTIFACT_PREDICTORS`, tried by labtf.predict.open_predictor).

SavedModel (TF Serving layout or a bare SavedModel folder), ``.tflite``
(ai-edge-litert), ``.onnx`` (onnxruntime) and TensorRT ``.engine``/``.plan``.
All take the same float32 RGB 0..255 batches and all have the CAM output.
Importing this module is cheap; runtimes are imported when an artifact is opened.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from labtf.errors import LabtfError
from labtf.predictor_base import Predictor
from labtf.serving.static import is_web_bundle

log = logging.getLogger(__name__)


def _need(module: str, extra: str, what: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise LabtfError(f"{what} needs the '{module}' package, which is not installed; "
                         f"pip install 'labtf[{extra}]'") from None


class _ArtifactPredictor(Predictor):
    """Common init from an artifact's labtf metadata."""

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


class SavedModelPredictor(_ArtifactPredictor):
    """A labtf SavedModel, through its ``serving_pixels`` signature."""

    def __init__(self, path: Path) -> None:
        from exporters.saved_model import find_version_dir

        folder = find_version_dir(path)
        meta_file = folder / "assets.extra" / "labtf.json" if folder else None
        if meta_file is None or not meta_file.is_file():
            raise LabtfError(f"{path}: not a labtf SavedModel (no assets.extra/labtf.json)")
        self._set_meta(json.loads(meta_file.read_text()), folder)
        tf = _need("tensorflow", "cpu", "a SavedModel")
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


class TFLitePredictor(_ArtifactPredictor):
    """A labtf ``.tflite`` run with ai-edge-litert's Interpreter."""

    def __init__(self, path: Path, num_threads: int | None = None) -> None:
        from exporters.tflite import read_embedded

        self._set_meta(read_embedded(path), path)
        mod = _need("ai_edge_litert.interpreter", "tflite", "a .tflite model")
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


class ONNXPredictor(_ArtifactPredictor):
    """A labtf ``.onnx`` run with onnxruntime (CPU, or CUDA when available)."""

    def __init__(self, path: Path, num_threads: int | None = None) -> None:
        from exporters.onnx import read_metadata

        _need("onnx", "onnx", "an .onnx model")
        self._set_meta(read_metadata(path), path)
        ort = _need("onnxruntime", "onnx", "an .onnx model")
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


class TensorRTPredictor(_ArtifactPredictor):
    """A TensorRT engine (``.engine``/``.plan``) with its ``.json`` sidecar.

    Untested here (no GPU): uses the TensorRT 10 tensor API and cuda-python.
    """

    def __init__(self, path: Path) -> None:
        sidecar = Path(f"{path}.json")
        if not sidecar.is_file():
            raise LabtfError(f"{path}: missing {sidecar.name} (labels); re-export with labtf")
        self._set_meta(json.loads(sidecar.read_text()), path)
        trt = _need("tensorrt", "tensorrt", "a TensorRT engine")
        self.cudart = _need("cuda.bindings.runtime", "tensorrt", "a TensorRT engine")
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(Path(path).read_bytes())
        if self.engine is None:
            raise LabtfError(f"{path}: TensorRT could not load the engine (other GPU/TRT version?)")
        self.context = self.engine.create_execution_context()

    def _run(self, images):
        cudart = self.cudart
        x = np.ascontiguousarray(images, np.float32)
        self.context.set_input_shape("image", x.shape)
        host = {"image": x}
        for name in ("probabilities", "cam"):
            host[name] = np.empty(tuple(self.context.get_tensor_shape(name)), np.float32)
        dev = {}
        try:
            for name, arr in host.items():
                dev[name] = cudart.cudaMalloc(arr.nbytes)[1]
                self.context.set_tensor_address(name, int(dev[name]))
            cudart.cudaMemcpy(dev["image"], x.ctypes.data, x.nbytes,
                              cudart.cudaMemcpyKind.cudaMemcpyHostToDevice)
            self.context.execute_async_v3(0)
            cudart.cudaDeviceSynchronize()
            for name in ("probabilities", "cam"):
                cudart.cudaMemcpy(host[name].ctypes.data, dev[name], host[name].nbytes,
                                  cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost)
        finally:
            for ptr in dev.values():
                cudart.cudaFree(ptr)
        return host["probabilities"].astype(np.float64), host["cam"]


def _is_saved_model(path: Path) -> bool:
    from exporters.saved_model import find_version_dir

    return path.is_dir() and find_version_dir(path) is not None


def _suffix(*suffixes: str):
    return lambda path: path.is_file() and path.suffix.lower() in suffixes


#: Exported-artifact predictors, tried after labtf.predict.PREDICTORS (first match wins).
ARTIFACT_PREDICTORS = [
    (_is_saved_model, SavedModelPredictor,
     "a labtf SavedModel (<base>/<name>/<version>/ or a folder with saved_model.pb)"),
    (_suffix(".tflite"), TFLitePredictor, "a .tflite file exported by labtf"),
    (is_web_bundle, lambda path: TFLitePredictor(path / "model.tflite"),
     "a web app folder (labtf export --format web)"),
    (_suffix(".onnx"), ONNXPredictor, "an .onnx file exported by labtf"),
    (_suffix(".engine", ".plan"), TensorRTPredictor, "a TensorRT .engine/.plan exported by labtf"),
]


def save_overlay(image: np.ndarray, cam: np.ndarray, path: Path, alpha: float = 0.45) -> Path:
    """Write a heat-map overlay PNG of ``cam`` (h,w in [0,1]) on ``image`` (S,S,3 uint8)."""
    from labtf.explain.render import overlay, save_png

    return save_png(overlay(image, np.asarray(cam, np.float32), alpha), path)
