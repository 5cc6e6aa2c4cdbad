"""Saliency maps for a trained run: the :class:`Explainer` and what it returns.

:meth:`Explainer.maps` runs a method of :data:`labtf.explain.registry.METHODS`
(implementations: :mod:`labtf.explain.methods`) on a float32 batch ``x``
(N, S, S, 3) in 0..255 for target class indices: maps (N, S, S) in 0..1, plus an
optional signed RGB map (guided methods), always computed in float32.
"""
from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from labtf.errors import LabtfError
from labtf.explain.registry import METHODS, check_method, method_function  # noqa: F401 (METHODS:
# benchmarks/explain_bench.py imports it from here)

log = logging.getLogger(__name__)

#: Images per compiled prediction call of :meth:`Explainer.predict`.
PREDICT_BATCH = 32


@dataclass
class MapResult:
    """Maps of one method for a batch.

    Attributes:
        maps: (N, S, S) float32 in 0..1.
        rgb: (N, S, S, 3) signed per-channel maps (guided methods) or None.
    """

    maps: np.ndarray
    rgb: np.ndarray | None = None


@dataclass
class Explanation:
    """One image explained by one method for one class."""

    method: str
    map: np.ndarray
    class_index: int
    class_name: str
    confidence: float
    predicted: str
    predicted_confidence: float
    layer: str
    rgb: np.ndarray | None = None


def conv_layer_names(model) -> list[str]:
    """Names of layers with a 4-D (N, h, w, c) output, input side first."""
    out = []
    for lyr in model.layers:
        try:
            shape = lyr.output.shape
        except (AttributeError, ValueError):
            continue
        if len(shape) == 4 and lyr.name not in ("image", "preprocess"):
            out.append(lyr.name)
    return out


def resolve_layer(model, name: str) -> str:
    """Check that ``name`` is a layer with a spatial output.

    Raises:
        LabtfError: unknown or non-spatial layer; the message lists valid names.
    """
    valid = conv_layer_names(model)
    if name in valid:
        return name
    hint = ", ".join(valid[-5:])
    raise LabtfError(f"layer '{name}' is not a convolutional layer of this model; "
                     f"try one of: {hint} (last conv layers; {len(valid)} in all)")


def resolve_class(classes: list[str], name: str) -> int:
    """Index of class ``name``.

    Raises:
        LabtfError: unknown class; the message lists the valid names.
    """
    if name in classes:
        return classes.index(name)
    raise LabtfError(f"unknown class '{name}'; the run knows: {', '.join(classes)}")


class Explainer:
    """A run's model prepared for explanation (float32, logits sub-model, guided clone).

    Args:
        model: the run's Keras classifier (output ``probs``, layer ``logits``).
        classes: class names in index order.
        layer: the CAM target layer name.
        image_size: model input side.
        resize: ``crop``/``pad``/``squash`` used to make inputs.
        seed: seed of the random baseline.

    Raises:
        LabtfError: the layer is not a conv layer of the model.
    """

    def __init__(self, model, classes: list[str], layer: str, image_size: int,
                 resize: str = "crop", seed: int = 0) -> None:
        import keras

        from labtf.explain.guided import float32_model
        from labtf.model import LOGITS

        self.model = float32_model(model)
        self.classes, self.image_size, self.resize, self.seed = classes, image_size, resize, seed
        self.layer = resolve_layer(self.model, layer)
        self.logits_model = keras.Model(self.model.inputs, self.model.get_layer(LOGITS).output,
                                        name="logits_model")
        # Score-CAM calls predict(); keep its progress bar out of the user's terminal.
        self.logits_model.predict = functools.partial(self.logits_model.predict, verbose=0)
        self._guided = None
        #: tf-keras-vis visualizers by class name, built on first use (see ``_visualizer``).
        self.visualizers: dict = {}
        #: RGB pixel that is 0 after the model's preprocessing (RISE's deletion substrate).
        self.baseline_pixel = np.full(3, 127.5, np.float32)

    def set_preprocessing(self, mode: str) -> None:
        """Set :attr:`baseline_pixel` from a preprocessing name of the backbone registry."""
        from labtf.backbones import PREPROCESSING

        p = PREPROCESSING.get(mode)
        if p:
            mean = np.asarray(p["mean"], np.float32)
            self.baseline_pixel = mean[::-1].copy() if p["bgr"] else mean

    @classmethod
    def from_run(cls, run, layer: str | None = None, seed: int = 0) -> "Explainer":
        """Explainer for a :class:`labtf.run.Run` (layer: ``run.meta['cam_layer']`` by default)."""
        meta = run.meta
        if not layer:
            layer = meta.get("cam_layer") or ""
        if not layer:
            from labtf.backbones import get_backbone

            layer = get_backbone(meta["backbone"]).cam_layer
        model = run.load_model()
        if not layer:
            from labtf.model import GAP

            layer = model.get_layer(GAP).input._keras_history.operation.name
        ex = cls(model, run.classes, layer, int(meta["image_size"]), meta.get("resize", "crop"),
                 seed)
        ex.set_preprocessing(meta.get("preprocessing", ""))
        return ex

    @property
    def guided_logits_model(self):
        """Logits sub-model of the guided clone (built on first use)."""
        if self._guided is None:
            import keras

            from labtf.explain.guided import guided_clone

            g = guided_clone(self.logits_model)
            self._guided = keras.Model(g.inputs, g.outputs[0] if isinstance(g.outputs, list)
                                       else g.outputs)
        return self._guided

    def sync_guided(self) -> None:
        """Copy the model's current weights into the guided clone (after editing weights)."""
        if self._guided is not None:
            self._guided.set_weights(self.logits_model.get_weights())

    def load(self, path: str | os.PathLike) -> np.ndarray:
        """Read an image file as the model sees it: uint8 (S, S, 3).

        Raises:
            BadImage: unreadable file.
        """
        from labtf.images import load_rgb, to_square

        return to_square(load_rgb(path), self.image_size, self.resize)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Probabilities (N, C) for (N, S, S, 3) in 0..255.

        Runs Keras' compiled predict step on :data:`PREDICT_BATCH` images at a time: an
        eager call keeps every layer's output of the whole batch alive (about 75 MB per
        224-px image for EfficientNet-Lite0), the compiled step a few MB.
        """
        x = np.asarray(x, np.float32)
        if not len(x):
            return np.zeros((0, len(self.classes)))
        out = [np.asarray(self.model.predict_on_batch(x[i:i + PREDICT_BATCH]), np.float64)
               for i in range(0, len(x), PREDICT_BATCH)]
        return np.concatenate(out)

    def maps(self, method: str, x: np.ndarray, classes: list[int]) -> MapResult:
        """Maps of ``method`` for a batch and target class indices."""
        x = np.asarray(x, np.float32)
        return method_function(method)(self, x, list(classes))

    def explain(self, image: np.ndarray, method: str = "gradcam",
                class_name: str | None = None) -> Explanation:
        """Explain one image (uint8 or float (S, S, 3)) for the top or a named class.

        Raises:
            LabtfError: unknown method or class.
        """
        check_method(method)
        target = resolve_class(self.classes, class_name) if class_name else None
        probs = self.predict(image[None])[0]
        top = int(probs.argmax())
        idx = top if target is None else target
        res = self.maps(method, image[None], [idx])
        return Explanation(method, res.maps[0], idx, self.classes[idx], float(probs[idx]),
                           self.classes[top], float(probs[top]), self.layer,
                           None if res.rgb is None else res.rgb[0])


def output_stem(path: str | os.PathLike, used: set[str]) -> str:
    """A unique file stem for an input image (``name``, ``name_2``, ...)."""
    stem = Path(path).stem or "image"
    cand, i = stem, 2
    while cand in used:
        cand, i = f"{stem}_{i}", i + 1
    used.add(cand)
    return cand
