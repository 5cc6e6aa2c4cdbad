"""The explanation methods behind :data:`labtf.explain.registry.METHODS`.

Every method maps a float32 batch ``x`` (N, S, S, 3) in 0..255 and target class
indices to a :class:`~labtf.explain.core.MapResult`: maps (N, S, S) in 0..1
(per-image min-max, :func:`labtf.maps.normalize_maps` with ``floor="min"``), plus
a signed RGB map for guided methods. CAM methods and saliency come from
tf-keras-vis 0.8.7 applied to the *logits* sub-model (scores before the softmax,
as Grad-CAM prescribes; Score-CAM applies its own softmax). Guided backprop uses
:func:`labtf.explain.guided.guided_clone`, which works for separate ReLU layers
too. Maps are always computed in float32. TensorFlow and tf-keras-vis are
imported inside the functions.
"""
from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Callable

import numpy as np

from labtf.explain.core import MapResult
from labtf.maps import normalize_maps

if TYPE_CHECKING:
    from labtf.explain.core import Explainer

#: Score-CAM channels kept by Faster-Score-CAM (highest spatial variance).
FASTER_SCORECAM_N = 64
#: SmoothGrad: noisy samples and noise level (fraction of the input range).
SMOOTHGRAD_SAMPLES, SMOOTHGRAD_NOISE = 20, 0.2
#: tf-keras-vis visualizer class -> its module in tf_keras_vis.
_VISUALIZERS = {"Gradcam": "gradcam", "GradcamPlusPlus": "gradcam_plus_plus",
                "Layercam": "layercam", "Scorecam": "scorecam", "Saliency": "saliency"}


def _min_max(maps: np.ndarray) -> np.ndarray:
    """Per-image min-max to 0..1 (a constant map becomes 0), float32."""
    return normalize_maps(maps, floor="min")


def _score(classes: list[int]):
    from tf_keras_vis.utils.scores import CategoricalScore

    return CategoricalScore([int(c) for c in classes])


def _visualizer(ex: "Explainer", cls_name: str):
    """The tf-keras-vis visualizer ``cls_name`` of the explainer, built once and reused."""
    if cls_name not in ex.visualizers:
        import importlib

        module = importlib.import_module(f"tf_keras_vis.{_VISUALIZERS[cls_name]}")
        ex.visualizers[cls_name] = getattr(module, cls_name)(ex.logits_model, clone=False)
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
        return MapResult(_min_max(np.concatenate([np.reshape(c, (-1, *x.shape[1:3])) for c in cams])))

    method.__doc__ = f"tf-keras-vis {cls_name} {kwargs or ''}".strip()
    return method


def _saliency(smooth_samples: int) -> Callable:
    def method(ex: "Explainer", x: np.ndarray, classes: list[int]) -> MapResult:
        maps = _visualizer(ex, "Saliency")(_score(classes), x, smooth_samples=smooth_samples,
                                           smooth_noise=SMOOTHGRAD_NOISE, normalize_map=False)
        return MapResult(_min_max(np.reshape(maps, x.shape[:3])))

    method.__doc__ = f"tf-keras-vis Saliency, {smooth_samples} SmoothGrad samples"
    return method


gradcam = _cam("Gradcam")
gradcam_plus_plus = _cam("GradcamPlusPlus")
layercam = _cam("Layercam")
scorecam = _cam("Scorecam", per_image=True, batch_size=32)
faster_scorecam = _cam("Scorecam", per_image=True, batch_size=32, max_N=FASTER_SCORECAM_N)
saliency = _saliency(0)
smoothgrad = _saliency(SMOOTHGRAD_SAMPLES)


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
    return MapResult(_min_max(np.abs(g).max(axis=-1)), g)


def guided_gradcam(ex: "Explainer", x: np.ndarray, classes: list[int]) -> MapResult:
    """Guided Grad-CAM (Selvaraju et al.): guided backprop x upsampled Grad-CAM."""
    cam = gradcam(ex, x, classes).maps
    g = _guided_grads(ex, x, classes) * cam[..., None]
    return MapResult(_min_max(np.abs(g).max(axis=-1)), g)


def random_map(ex: "Explainer", x: np.ndarray, classes: list[int]) -> MapResult:
    """Uniform noise: the baseline every faithfulness score is compared with.

    Each image's noise is seeded by the explainer's seed and the image's bytes, so an
    image gets the same map whatever batch it comes in.
    """
    maps = [np.random.default_rng([ex.seed, zlib.crc32(np.ascontiguousarray(img).tobytes())])
            .random(x.shape[1:3]).astype(np.float32) for img in x]
    return MapResult(np.stack(maps) if maps else np.zeros(x.shape[:3], np.float32))
