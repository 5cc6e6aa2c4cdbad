"""Export formats for field deployment; ``FORMATS`` is the one table.

Each format is a module with ``export_<fmt>(run, path, **opts) -> Path``. The
table drives the CLI choices, option validation, the "extra not installed"
message and the parametrized tests. Every artifact carries the same contract:
input ``image`` float32 RGB 0..255 (N,S,S,3), outputs ``probabilities`` and the
top-class ``cam`` (see :mod:`labtf.export_model`).
"""
from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from pathlib import Path

from labtf.errors import LabtfError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Format:
    """One export format."""

    name: str
    module: str
    extra: str            # setup.cfg extra that installs what it needs ("" = none)
    requires: tuple       # importable module names checked before exporting
    quantize: tuple       # accepted --quantize values
    description: str
    runtime_requires: tuple = ()   # also needed to run the artifact (predict/parity)

    def exporter(self):
        """The ``export_<name>`` function."""
        return getattr(importlib.import_module(self.module), f"export_{self.name}")


FORMATS: dict[str, Format] = {f.name: f for f in [
    Format("saved_model", "exporters.saved_model", "", ("tensorflow",), ("none",),
           "TF SavedModel, TF Serving layout <out>/<name>/<version>/"),
    Format("tflite", "exporters.tflite", "tflite", ("tensorflow",), ("none", "float16", "int8"),
           "TF-Lite flatbuffer with TFLite Metadata (+ classifier twin for MediaPipe)",
           runtime_requires=("ai_edge_litert",)),
    Format("onnx", "exporters.onnx", "onnx", ("tf2onnx", "onnx"), ("none",),
           "ONNX (tf2onnx), labels in metadata_props", runtime_requires=("onnxruntime",)),
    Format("tensorrt", "exporters.tensorrt", "tensorrt", ("tensorrt", "tf2onnx", "onnx"),
           ("float16", "int8"), "TensorRT engine from the ONNX export (GPU host)"),
    Format("web", "exporters.web", "", ("tensorflow",), ("int8", "none", "float16"),
           "offline browser app (LiteRT.js from npm): photo -> labels + CAM overlay",
           runtime_requires=("ai_edge_litert",)),
]}


def get_format(name: str) -> Format:
    """Look a format up by name.

    Raises:
        LabtfError: unknown name (the message lists the valid ones).
    """
    if name not in FORMATS:
        raise LabtfError(f"unknown export format '{name}'; choose one of: {', '.join(FORMATS)}")
    return FORMATS[name]


def require(modules: tuple, extra: str, what: str) -> None:
    """Check that ``modules`` import.

    Raises:
        LabtfError: one names the missing module and the pip extra that installs it.
    """
    for mod in modules:
        try:
            importlib.import_module(mod)
        except ImportError:
            hint = f"pip install 'labtf[{extra}]'" if extra else f"pip install {mod}"
            raise LabtfError(f"{what} needs the '{mod}' package, which is not installed; "
                             f"{hint}") from None


def export(run_path, fmt: str, out, quantize: str | None = None, overwrite: bool = False,
           **opts) -> Path:
    """Export a run folder to one format.

    Args:
        run_path: the run folder.
        fmt: a key of :data:`FORMATS`.
        out: output folder.
        quantize: one of the format's ``quantize`` values (``None``: its first).
        overwrite: replace an existing artifact.
        **opts: format options (``io_type``, ``name``, ``version``, ...).

    Returns:
        The artifact path.

    Raises:
        LabtfError: missing run, unknown format/option, missing extra, existing artifact.
    """
    from labtf.run import Run

    spec = get_format(fmt)
    quantize = quantize or spec.quantize[0]
    if fmt == "tensorrt" and quantize == "none":
        quantize = "float16"
    if quantize not in spec.quantize:
        raise LabtfError(f"format {fmt} takes --quantize {' | '.join(spec.quantize)}, "
                         f"not '{quantize}'")
    run = Run.open(run_path)
    require(spec.requires, spec.extra, f"export to {fmt}")
    return spec.exporter()(run, Path(out), quantize=quantize, overwrite=overwrite, **opts)
