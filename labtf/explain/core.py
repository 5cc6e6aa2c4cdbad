"""Saliency maps for a trained run: the METHODS registry and the :class:`Explainer`.

Every method maps a float32 batch ``x`` (N, S, S, 3) in 0..255 and target
class indices to maps (N, S, S) in 0..1 (per-image min-max normalised), plus
an optional signed RGB map (guided methods). CAM methods and saliency come
from tf-keras-vis 0.8.7 applied to the *logits* sub-model (scores before the
softmax, as Grad-CAM prescribes; Score-CAM applies its own softmax). Guided
backprop uses :func:`labtf.explain.guided.guided_clone`, which works for
separate ReLU layers too. Maps are always computed in float32.
"""
from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from labtf.errors import LabtfError

log = logging.getLogger(__name__)

#: Score-CAM channels kept by Faster-Score-CAM (highest spatial variance).
FASTER_SCORECAM_N = 64
#: SmoothGrad: noisy samples and noise level (fraction of the input range).
SMOOTHGRAD_SAMPLES, SMOOTHGRAD_NOISE = 20, 0.2
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


def _norm(maps: np.ndarray) -> np.ndarray:
    """Per-image min-max to 0..1 (a constant map becomes 0), float32."""
    maps = np.nan_to_num(np.asarray(maps, np.float32))
    lo = maps.min(axis=tuple(range(1, maps.ndim)), keepdims=True)
    hi = maps.max(axis=tuple(range(1, maps.ndim)), keepdims=True)
    span = (hi - lo).astype(np.float64)
    out = (maps - lo) / np.where(span > 0, span, 1.0)
    return np.where(span > 0, out, 0.0).astype(np.float32)


def _score(classes: list[int]):
    from tf_keras_vis.utils.scores import CategoricalScore

    return CategoricalScore([int(c) for c in classes])


def _visualizer(ex: "Explainer", cls_name: str):
    """The tf-keras-vis visualizer ``cls_name`` of the explainer, built once and reused."""
    if cls_name not in ex.visualizers:
        import importlib

        module = {"Gradcam": "gradcam", "GradcamPlusPlus": "gradcam_plus_plus",
                  "Layercam": "layercam", "Scorecam": "scorecam",
                  "Saliency": "saliency"}[cls_name]
        cls = getattr(importlib.import_module(f"tf_keras_vis.{module}"), cls_name)
        ex.visualizers[cls_name] = cls(ex.logits_model, clone=False)
    return ex.visualizers[cls_name]


def _cam(cls_name: str, per_image: bool = False, **kwargs) -> Callable:
    """A tf-keras-vis CAM method; ``per_image``: one image per call (Score-CAM: its masked
    copies grow with the batch, and Faster-Score-CAM picks its channels over the batch)."""
    def method(ex: "Explainer", x: np.ndarray, classes: list[int]) -> MapResult:
        vis = _visualizer(ex, cls_name)
        groups = [slice(i, i + 1) for i in range(len(x))] if per_image else [slice(None)]
        cams = [vis(_score(classes[g]), x[g], penultimate_layer=ex.layer,
                    seek_penultimate_conv_layer=False, normalize_cam=False, **kwargs)
                for g in groups]
        return MapResult(_norm(np.concatenate([np.reshape(c, (-1, *x.shape[1:3])) for c in cams])))

    return method


def _saliency(smooth_samples: int) -> Callable:
    def method(ex: "Explainer", x: np.ndarray, classes: list[int]) -> MapResult:
        maps = _visualizer(ex, "Saliency")(_score(classes), x, smooth_samples=smooth_samples,
                                           smooth_noise=SMOOTHGRAD_NOISE, normalize_map=False)
        return MapResult(_norm(np.reshape(maps, x.shape[:3])))

    return method


def _guided_grads(ex: "Explainer", x: np.ndarray, classes: list[int]) -> np.ndarray:
    import tensorflow as tf

    xt = tf.convert_to_tensor(x, tf.float32)
    idx = tf.constant([[i, int(c)] for i, c in enumerate(classes)])
    with tf.GradientTape() as tape:
        tape.watch(xt)
        score = tf.gather_nd(ex.guided_logits_model(xt, training=False), idx)
    return tape.gradient(score, xt).numpy()


def guided_backprop(ex: "Explainer", x: np.ndarray, classes: list[int]) -> MapResult:
    """Guided backpropagation (Springenberg et al.) on the guided clone."""
    g = _guided_grads(ex, x, classes)
    return MapResult(_norm(np.abs(g).max(axis=-1)), g)


def guided_gradcam(ex: "Explainer", x: np.ndarray, classes: list[int]) -> MapResult:
    """Guided Grad-CAM (Selvaraju et al.): guided backprop x upsampled Grad-CAM."""
    cam = METHODS["gradcam"](ex, x, classes).maps
    g = _guided_grads(ex, x, classes) * cam[..., None]
    return MapResult(_norm(np.abs(g).max(axis=-1)), g)


def random_map(ex: "Explainer", x: np.ndarray, classes: list[int]) -> MapResult:
    """Uniform noise: the baseline every faithfulness score is compared with.

    Each image's noise is seeded by the explainer's seed and the image's bytes, so an
    image gets the same map whatever batch it comes in.
    """
    import zlib

    maps = [np.random.default_rng([ex.seed, zlib.crc32(np.ascontiguousarray(img).tobytes())])
            .random(x.shape[1:3]).astype(np.float32) for img in x]
    return MapResult(np.stack(maps) if maps else np.zeros(x.shape[:3], np.float32))


#: Method name -> function(explainer, x (N,S,S,3) float32 0..255, class indices) -> MapResult.
METHODS: dict[str, Callable] = {
    "gradcam": _cam("Gradcam"),
    "gradcam++": _cam("GradcamPlusPlus"),
    "scorecam": _cam("Scorecam", per_image=True, batch_size=32),
    "faster-scorecam": _cam("Scorecam", per_image=True, batch_size=32, max_N=FASTER_SCORECAM_N),
    "layercam": _cam("Layercam"),
    "saliency": _saliency(0),
    "smoothgrad": _saliency(SMOOTHGRAD_SAMPLES),
    "guided": guided_backprop,
    "guided-gradcam": guided_gradcam,
    "random": random_map,  # the baseline of explain-eval
}


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


def check_method(name: str) -> str:
    """Raises LabtfError for an unknown method name (lists the valid ones)."""
    if name not in METHODS:
        raise LabtfError(f"unknown method '{name}'; choose one of: {', '.join(METHODS)}")
    return name


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
        return METHODS[check_method(method)](self, x, list(classes))

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
