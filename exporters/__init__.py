"""Artifact formats as plug-ins; ``FORMATS`` is the one table.

Each format is one module ``exporters/<fmt>.py`` holding its writer
(``export_<fmt>(run, path, *, quantize, overwrite, **options) -> Path``), its
reader (a :class:`labtf.predictor_base.Predictor` opened by ``open_artifact``),
``detect(path) -> bool`` and its option schema ``OPTIONS``, plus one
:class:`Format` line here. The table drives the CLI choices and option routing,
option validation, the "extra not installed" message, :func:`labtf.predict.open_predictor`
and the parametrized tests. Every artifact carries the same contract: input
``image`` float32 RGB 0..255 (N,S,S,3), outputs ``probabilities`` and the
top-class ``cam`` (see :mod:`labtf.cam_head`).

Importing this package imports no TensorFlow and no format module: the built-in
entries resolve their module on first use.
"""
from __future__ import annotations

import functools
import importlib
import inspect
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Callable

from labtf.errors import LabtfError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Option:
    """One exporter option: its default, the accepted types and a line of help."""

    default: object
    types: tuple = ()     # accepted types; None is also accepted when the default is None
    help: str = ""


def check_options(fmt: str, opts: Mapping, options: Mapping[str, Option]) -> None:
    """Reject option names ``fmt`` does not take and values of the wrong type.

    Raises:
        LabtfError: one line naming the option and listing the valid ones.
    """
    for key, value in opts.items():
        if key not in options:
            valid = ", ".join(options) or "none"
            raise LabtfError(f"format {fmt} has no option '{key}'; valid options: {valid}")
        opt = options[key]
        if opt.types and not (isinstance(value, opt.types)
                              or (value is None and opt.default is None)):
            kinds = " or ".join(t.__name__ for t in opt.types)
            raise LabtfError(f"format {fmt}: option '{key}' takes {kinds}, not {value!r}")


def takes_options(fmt: str, options: Mapping[str, Option]):
    """Decorator for ``export_<fmt>``: keyword options must be ``quantize``, ``overwrite`` or
    a name of ``options``; anything else is a :class:`LabtfError` listing the valid ones.

    The function's keyword parameters must be exactly those names (checked at import).
    """
    def wrap(fn: Callable) -> Callable:
        params = list(inspect.signature(fn).parameters)[2:]
        expected = {"quantize", "overwrite", *options}
        if set(params) != expected:
            raise TypeError(f"{fn.__name__}: parameters {sorted(params)} != options "
                            f"{sorted(expected)}")

        @functools.wraps(fn)
        def exporter(run, path, **kwargs):
            check_options(fmt, {k: v for k, v in kwargs.items()
                                if k not in ("quantize", "overwrite")}, options)
            return fn(run, path, **kwargs)

        exporter.options = options
        return exporter

    return wrap


class _Lazy:
    """``module:attr`` imported on first call (keeps ``import exporters`` free of TensorFlow)."""

    def __init__(self, module: str, attr: str) -> None:
        self.module, self.attr = module, attr

    def resolve(self):
        return getattr(importlib.import_module(self.module), self.attr)

    def __call__(self, *args, **kwargs):
        return self.resolve()(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<lazy {self.module}.{self.attr}>"


class _LazyOptions(Mapping):
    """A format module's ``OPTIONS``, imported on first access."""

    def __init__(self, module: str) -> None:
        self._ref = _Lazy(module, "OPTIONS")

    def __getitem__(self, key):
        return self._ref.resolve()[key]

    def __iter__(self):
        return iter(self._ref.resolve())

    def __len__(self) -> int:
        return len(self._ref.resolve())


@dataclass(frozen=True)
class Format:
    """One artifact format: how to write it, recognise it and open it.

    Attributes:
        name: the ``--format`` value.
        export: ``(run, path, *, quantize, overwrite, **options) -> Path``.
        open: ``path -> Predictor`` (the reader).
        detect: ``path -> bool``: is ``path`` this format's artifact.
        artifact: what ``open`` accepts, for "cannot predict with" messages.
        options: option name -> :class:`Option` (besides ``quantize`` and ``overwrite``).
        quantize: accepted ``--quantize`` values.
        default_quantize: the value used when none is given (also for ``none`` when the
            format has no unquantised build).
        extra: setup.cfg extra that installs what it needs ("" = none).
        requires: importable module names checked before exporting.
        description: one line for help texts.
        runtime_requires: also needed to run the artifact (predict/parity).
    """

    name: str
    export: Callable
    open: Callable
    detect: Callable
    artifact: str
    options: Mapping[str, Option]
    quantize: tuple
    default_quantize: str
    extra: str
    requires: tuple
    description: str
    runtime_requires: tuple = ()


def _plugin(name: str, **fields) -> Format:
    """A built-in format whose module ``exporters.<name>`` holds ``export_<name>``,
    ``open_artifact``, ``detect`` and ``OPTIONS``."""
    module = f"exporters.{name}"
    return Format(name, export=_Lazy(module, f"export_{name}"), open=_Lazy(module, "open_artifact"),
                  detect=_Lazy(module, "detect"), options=_LazyOptions(module), **fields)


FORMATS: dict[str, Format] = {f.name: f for f in [
    _plugin("saved_model", quantize=("none",), default_quantize="none", extra="",
            requires=("tensorflow",),
            description="TF SavedModel, TF Serving layout <out>/<name>/<version>/",
            artifact="a labtf SavedModel (<base>/<name>/<version>/ or a folder with saved_model.pb)"),
    _plugin("tflite", quantize=("none", "float16", "int8"), default_quantize="none",
            extra="tflite", requires=("tensorflow",), runtime_requires=("ai_edge_litert",),
            description="TF-Lite flatbuffer with TFLite Metadata (+ classifier twin for MediaPipe)",
            artifact="a .tflite file exported by labtf"),
    _plugin("onnx", quantize=("none",), default_quantize="none", extra="onnx",
            requires=("tf2onnx", "onnx"), runtime_requires=("onnxruntime",),
            description="ONNX (tf2onnx), labels in metadata_props",
            artifact="an .onnx file exported by labtf"),
    _plugin("tensorrt", quantize=("float16", "int8"), default_quantize="float16",
            extra="tensorrt", requires=("tensorrt", "tf2onnx", "onnx"),
            description="TensorRT engine from the ONNX export (GPU host)",
            artifact="a TensorRT .engine/.plan exported by labtf"),
    _plugin("web", quantize=("int8", "none", "float16"), default_quantize="int8", extra="",
            requires=("tensorflow",), runtime_requires=("ai_edge_litert",),
            description="offline browser app (LiteRT.js from npm): photo -> labels + CAM overlay",
            artifact="a web app folder (labtf export --format web)"),
]}


def get_format(name: str) -> Format:
    """Look a format up by name.

    Raises:
        LabtfError: unknown name (the message lists the valid ones).
    """
    if name not in FORMATS:
        raise LabtfError(f"unknown export format '{name}'; choose one of: {', '.join(FORMATS)}")
    return FORMATS[name]


def require(module: str, *, extra: str, what: str) -> ModuleType:
    """Import ``module``, or say which pip extra installs it.

    Args:
        module: dotted module name.
        extra: setup.cfg extra that installs it ("" : name the package itself).
        what: what needs it ("export to onnx", "an .onnx model").

    Returns:
        The module.

    Raises:
        LabtfError: one line naming the missing module and the pip command.
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        hint = f"pip install 'labtf[{extra}]'" if extra else f"pip install {module}"
        raise LabtfError(f"{what} needs the '{module}' package, which is not installed; "
                         f"{hint}") from None


def export(run_path, fmt: str, out, quantize: str | None = None, overwrite: bool = False,
           **opts) -> Path:
    """Export a run folder to one format.

    Args:
        run_path: the run folder.
        fmt: a key of :data:`FORMATS`.
        out: output folder.
        quantize: one of the format's ``quantize`` values (``None``: its ``default_quantize``;
            ``none`` for a format without an unquantised build also means the default).
        overwrite: replace an existing artifact.
        **opts: format options, names from the format's ``options`` (``io_type``, ``name``, ...).

    Returns:
        The artifact path.

    Raises:
        LabtfError: missing run, unknown format/option, missing extra, existing artifact.
    """
    from labtf.run import Run

    spec = get_format(fmt)
    if quantize is None or (quantize == "none" and "none" not in spec.quantize):
        quantize = spec.default_quantize
    if quantize not in spec.quantize:
        raise LabtfError(f"format {fmt} takes --quantize {' | '.join(spec.quantize)}, "
                         f"not '{quantize}'")
    check_options(fmt, opts, spec.options)
    run = Run.open(run_path)
    for module in spec.requires:
        require(module, extra=spec.extra, what=f"export to {fmt}")
    return spec.export(run, Path(out), quantize=quantize, overwrite=overwrite, **opts)
