"""TensorRT engine from the ONNX export (FP16, or INT8 with entropy calibration).

Needs the ``tensorrt`` Python package (NVIDIA GPU host, ``pip install
'labtf[tensorrt]'``) and ``cuda-python`` for device buffers. The engine is tied
to the GPU model and TensorRT version that built it. Labels and the input
contract go into ``<engine>.json`` beside it. Equivalent command line::

    trtexec --onnx=model.onnx --saveEngine=model_fp16.engine --fp16 \\
        --minShapes=image:1x224x224x3 --optShapes=image:1x224x224x3 --maxShapes=image:32x224x224x3

The calibrator's batches (:class:`CalibrationBatches`) are plain numpy and are
tested without a GPU.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from exporters import Option, require, takes_options
from exporters.common import (ArtifactPredictor, check_target, has_suffix, load_images, run_meta,
                              split_samples, write_bytes, write_sidecar)
from labtf.errors import LabtfError

log = logging.getLogger(__name__)

QUANTIZE = ("float16", "int8")

#: Options of :func:`export_tensorrt` (besides quantize and overwrite).
OPTIONS = {"calibration_images": Option(100, (int,), "int8: train-split images for calibration")}


class CalibrationBatches:
    """Fixed-size float32 NHWC batches of train images for INT8 calibration.

    Args:
        images: float32 (N,S,S,3) in 0..255 (the ONNX ``image`` input contract).
        batch_size: images per batch; the last partial batch is dropped.
    """

    def __init__(self, images: np.ndarray, batch_size: int = 8) -> None:
        images = np.ascontiguousarray(images, np.float32)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise LabtfError(f"calibration images must be (N,S,S,3), got {images.shape}")
        self.batch_size = int(max(1, min(batch_size, len(images))))
        self.images = images

    def __len__(self) -> int:
        return len(self.images) // self.batch_size

    def __iter__(self):
        for i in range(len(self)):
            yield self.images[i * self.batch_size:(i + 1) * self.batch_size]


def _calibrator(batches: CalibrationBatches, cache_file: Path):
    """An ``IInt8EntropyCalibrator2`` over ``batches`` (tensorrt + cuda-python)."""
    import tensorrt as trt
    from cuda.bindings import runtime as cudart  # cuda-python

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            super().__init__()
            self._it = iter(batches)
            nbytes = batches.images[:batches.batch_size].nbytes
            err, self._dev = cudart.cudaMalloc(nbytes)
            if int(err) != 0:
                raise LabtfError(f"cudaMalloc failed ({err})")

        def get_batch_size(self) -> int:
            return batches.batch_size

        def get_batch(self, names):
            batch = next(self._it, None)
            if batch is None:
                return None
            cudart.cudaMemcpy(self._dev, batch.ctypes.data, batch.nbytes,
                              cudart.cudaMemcpyKind.cudaMemcpyHostToDevice)
            return [int(self._dev)]

        def read_calibration_cache(self):
            return cache_file.read_bytes() if cache_file.is_file() else None

        def write_calibration_cache(self, cache) -> None:
            cache_file.write_bytes(bytes(cache))

    return EntropyCalibrator()


def build_engine(onnx_path: Path, image_size: int, quantize: str = "float16",
                 batches: CalibrationBatches | None = None, max_batch: int = 32,
                 workspace_gb: float = 2.0) -> bytes:
    """Build a serialized engine from an ONNX file with the TensorRT builder API.

    Raises:
        LabtfError: parse/build failure or missing calibration data for INT8.
    """
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise LabtfError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    profile = builder.create_optimization_profile()
    s = image_size
    profile.set_shape("image", (1, s, s, 3), (1, s, s, 3), (max_batch, s, s, 3))
    config.add_optimization_profile(profile)
    config.set_flag(trt.BuilderFlag.FP16)
    if quantize == "int8":
        if batches is None:
            raise LabtfError("INT8 engines need calibration batches")
        config.set_flag(trt.BuilderFlag.INT8)
        config.set_calibration_profile(profile)
        config.int8_calibrator = _calibrator(batches, Path(f"{onnx_path}.calib"))
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise LabtfError("TensorRT engine build failed (see the TensorRT log above)")
    return bytes(engine)


@takes_options("tensorrt", OPTIONS)
def export_tensorrt(run, path: str | Path, *, quantize: str = "float16", overwrite: bool = False,
                    calibration_images: int = 100) -> Path:
    """Export ``run`` to ``<path>/model_<fp16|int8>.engine`` (via ``<path>/model.onnx``).

    Raises:
        LabtfError: bad option, existing file, or a build failure.
    """
    from exporters.onnx import export_onnx

    quantize = "float16" if quantize in ("none", None) else quantize
    if quantize not in QUANTIZE:
        raise LabtfError(f"TensorRT builds {' or '.join(QUANTIZE)} engines, not '{quantize}'")
    target = Path(path) / f"model_{'fp16' if quantize == 'float16' else 'int8'}.engine"
    check_target(target, overwrite)
    onnx_path = Path(path) / "model.onnx"
    if not onnx_path.is_file():
        export_onnx(run, path)
    meta = run.meta
    size = int(meta["image_size"])
    batches = None
    if quantize == "int8":
        images, _ = load_images(split_samples(run, "train", calibration_images), size,
                                meta.get("resize", "crop"))
        batches = CalibrationBatches(images)
    write_bytes(target, build_engine(onnx_path, size, quantize, batches), overwrite=overwrite)
    write_sidecar(target, run_meta(run, "tensorrt", quantize=quantize))
    return target


def detect(path: Path) -> bool:
    """``path`` is a ``.engine``/``.plan`` file."""
    return has_suffix(path, ".engine", ".plan")


class TensorRTPredictor(ArtifactPredictor):
    """A TensorRT engine (``.engine``/``.plan``) with its ``.json`` sidecar.

    Untested here (no GPU): uses the TensorRT 10 tensor API and cuda-python.
    """

    def __init__(self, path: Path) -> None:
        sidecar = Path(f"{path}.json")
        if not sidecar.is_file():
            raise LabtfError(f"{path}: missing {sidecar.name} (labels); re-export with labtf")
        self._set_meta(json.loads(sidecar.read_text()), path)
        trt = require("tensorrt", extra="tensorrt", what="a TensorRT engine")
        self.cudart = require("cuda.bindings.runtime", extra="tensorrt", what="a TensorRT engine")
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


#: FORMATS["tensorrt"].open
open_artifact = TensorRTPredictor
