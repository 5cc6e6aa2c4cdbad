"""The deployment model: probabilities plus an on-device class activation map (the CAM head).

For labtf's head (GAP -> dropout -> Dense ``logits``) the logit of class c is
``b_c + mean_hw(sum_k w_kc A_k)``, so the class activation map of Zhou et al.
(2016), ``CAM_c = sum_k w_kc A_k``, needs no gradients: it is one 1x1
projection of the CAM layer's feature maps by the ``logits`` kernel. Grad-CAM
of the logit weights the maps by ``mean_hw(d logit_c / d A_k) = w_kc / (h w)``,
so after ReLU and per-image max normalisation the two maps are identical (up
to float round-off). :func:`build_export_model` puts that map for the top class
into the forward graph (``keras.ops`` only; every exporter builds on it),
:func:`grad_cam` is labtf's one Grad-CAM reference (gradients, any layer) that the
CAM head and the tf-keras-vis ``gradcam`` explanation method are checked against.
"""
from __future__ import annotations

import logging

import keras
import numpy as np
from keras import ops

from labtf.errors import LabtfError
from labtf.model import GAP, LOGITS

log = logging.getLogger(__name__)

#: Output names of the export model (every artifact keeps them).
PROBS_OUT, CAM_OUT = "probabilities", "cam"


class TopClassCAM(keras.layers.Layer):
    """CAM of the top class from feature maps, ReLU'd and scaled to [0, 1] per image.

    The ``logits`` kernel is copied in as a constant weight (an export is a
    snapshot). The top class is chosen with ``probs == max(probs)`` rather than
    argmax, which lowers to plain comparisons in every runtime (TF-Lite int8,
    ONNX, TensorRT); exact ties average their maps (the max scaling makes the
    sum and the mean the same map). ``normalize=False`` leaves out the final
    division (full-integer TF-Lite: an int8 DIV aborts on an all-zero map), and
    the runtime wrapper scales the map instead.
    """

    def __init__(self, kernel: np.ndarray, eps: float = 1e-30, normalize: bool = True,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.normalize = bool(normalize)
        kernel = np.asarray(kernel, np.float32)
        self.kernel = self.add_weight(shape=kernel.shape, initializer="zeros", trainable=False,
                                      name="cam_kernel", dtype="float32")
        self.kernel.assign(kernel)
        self.eps = float(eps)

    def call(self, features, probs):
        features = ops.cast(features, "float32")
        maps = ops.einsum("nhwk,kc->nhwc", features, self.kernel)
        top = ops.cast(ops.equal(probs, ops.max(probs, axis=-1, keepdims=True)), "float32")
        cam = ops.relu(ops.sum(maps * top[:, None, None, :], axis=-1))
        if not self.normalize:
            return cam
        return cam / ops.maximum(ops.max(cam, axis=(1, 2), keepdims=True), self.eps)


def _feature_layer(model: keras.Model, cam_layer: str | None):
    """The CAM layer by name, or the layer feeding the GAP."""
    if cam_layer:
        try:
            return model.get_layer(cam_layer)
        except ValueError:
            raise LabtfError(f"model has no layer '{cam_layer}' (run.json cam_layer)") from None
    return model.get_layer(GAP).input._keras_history.operation


def build_export_model(model: keras.Model, cam_layer: str | None = None,
                       with_cam: bool = True, normalize_cam: bool = True) -> keras.Model:
    """Wrap a trained classifier into the deployment model.

    Args:
        model: labtf classifier (input ``image`` 0..255, head ``gap``/``logits``).
        cam_layer: last convolutional feature layer (``run.meta['cam_layer']``).
        with_cam: add the ``cam`` output (False: probabilities only, for latency
            comparisons).
        normalize_cam: scale the CAM to [0, 1] in the graph (see TopClassCAM).

    Returns:
        A functional model ``image -> {"probabilities": (N, C), "cam": (N, h, w)}``.

    Raises:
        LabtfError: the model lacks the GAP -> Dense head or the CAM layer.
    """
    try:
        dense = model.get_layer(LOGITS)
        model.get_layer(GAP)
    except ValueError:
        raise LabtfError("model has no 'gap' -> 'logits' head; only labtf classifiers export "
                         "with an on-device CAM") from None
    probs = model.output
    outputs = {PROBS_OUT: probs}
    if with_cam:
        features = _feature_layer(model, cam_layer).output
        cam = TopClassCAM(ops.convert_to_numpy(dense.kernel), normalize=normalize_cam,
                          name="top_class_cam")(features, probs)
        outputs[CAM_OUT] = cam
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, outputs, name=f"{model.name}_export")


def _gradients(probe: keras.Model, x: np.ndarray, class_index: np.ndarray | None):
    """Features A, d score / d A and the class scored, for ``probe: image -> [A, logits]``.

    The score is the summed logit of ``class_index`` (``None``: each image's top class).
    TensorFlow differentiates through the probe with a GradientTape; JAX splits it at the
    feature layer and differentiates the head.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            feats, logits = probe(tf.convert_to_tensor(x, tf.float32), training=False)
            feats = tf.cast(feats, tf.float32)
            idx = tf.argmax(logits, -1) if class_index is None else tf.convert_to_tensor(class_index)
            score = tf.reduce_sum(tf.gather(logits, idx, axis=1, batch_dims=1))
        return feats.numpy(), tape.gradient(score, feats).numpy()
    if backend == "jax":
        import jax

        feat_out, logit_out = probe.outputs
        head = keras.Model(feat_out, logit_out)
        feats, logits = probe(ops.convert_to_tensor(x, "float32"), training=False)
        idx = (ops.argmax(logits, -1) if class_index is None
               else ops.convert_to_tensor(class_index, "int32"))

        def score(a):
            out = head(a, training=False)
            return ops.sum(ops.take_along_axis(out, ops.expand_dims(idx, -1), axis=1))

        grads = jax.grad(score)(feats)
        return (np.asarray(ops.convert_to_numpy(feats), np.float32),
                np.asarray(ops.convert_to_numpy(grads), np.float32))
    raise LabtfError(f"grad_cam supports the tensorflow and jax Keras backends, not {backend}")


def grad_cam(model: keras.Model, images: np.ndarray, cam_layer: str | None = None,
             class_index: np.ndarray | None = None, batch_size: int = 16, *,
             normalize: bool = True) -> np.ndarray:
    """Reference Grad-CAM (Selvaraju et al.) of the logit: ReLU(sum_k mean_hw(dy_c/dA_k) A_k).

    Args:
        model: labtf classifier, or any model holding a ``logits`` layer (the explainer's
            logits sub-model).
        images: float32 (N, S, S, 3) in 0..255.
        cam_layer: feature layer name (``None``: the layer feeding the GAP).
        class_index: class per image; ``None`` uses the model's top class.
        batch_size: images per gradient call.
        normalize: scale each map to [0, 1] with :func:`labtf.maps.normalize_maps`
            (all zero when nothing is positive); False returns the ReLU'd map.

    Returns:
        float32 (N, h, w) at feature-map resolution.
    """
    from labtf.maps import normalize_maps

    feat_layer = _feature_layer(model, cam_layer)
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    probe = keras.Model(inputs, [feat_layer.output, model.get_layer(LOGITS).output])
    out = []
    for start in range(0, len(images), batch_size):
        idx = None if class_index is None else np.asarray(class_index[start:start + batch_size])
        feats, grads = _gradients(probe, np.asarray(images[start:start + batch_size], np.float32),
                                  idx)
        alpha = grads.mean(axis=(1, 2), keepdims=True)
        cam = np.maximum((alpha * feats).sum(-1), 0.0).astype(np.float32)
        out.append(normalize_maps(cam) if normalize else cam)
    return np.concatenate(out) if out else np.zeros((0, 1, 1), np.float32)
