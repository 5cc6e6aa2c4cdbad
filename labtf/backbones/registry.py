"""The backbone registry: one :class:`BackboneSpec` per architecture.

A spec carries everything the rest of labtf needs to know about a backbone:
input size, preprocessing, the layer Grad-CAM looks at, where ImageNet
weights come from, and where its top blocks start (for fine-tuning). Adding a
backbone is one module (its builder; for ``.pth`` weights also its ``PTH_WEIGHTS``)
plus one entry here (or :func:`register_backbone` at run time); nothing else switches
on backbone names.
"""
from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from labtf.errors import LabtfError

if TYPE_CHECKING:
    from labtf.backbones.pth_weights import PthWeights

log = logging.getLogger(__name__)

#: Per-channel (mean, std) in 0..255 pixel units and channel order, by name: the one table
#: (the model's Preprocess layer and the ImageNet reference preprocessing both read it).
PREPROCESSING: dict[str, dict] = {
    "none": {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "bgr": False},
    "tf": {"mean": (127.5, 127.5, 127.5), "std": (127.5, 127.5, 127.5), "bgr": False},
    "torch": {"mean": (123.675, 116.28, 103.53), "std": (58.395, 57.12, 57.375), "bgr": False},
    "caffe": {"mean": (103.939, 116.779, 123.68), "std": (1.0, 1.0, 1.0), "bgr": True},
    "lite": {"mean": (127.0, 127.0, 127.0), "std": (128.0, 128.0, 128.0), "bgr": False},
}

#: Weight sources: where ``weights="imagenet"`` comes from.
WEIGHT_SOURCES = ("keras-download", "pth-package", "none")


@dataclass(frozen=True)
class BackboneSpec:
    """How to build and use one backbone.

    Attributes:
        name: registry key.
        input_size: native square input side.
        preprocessing: key of :data:`PREPROCESSING` (applied inside the model).
        cam_layer: name of the last conv layer (Grad-CAM target); empty means
            the feature model's output layer.
        weight_source: one of :data:`WEIGHT_SOURCES`.
        weight_file: ``keras-download``: the file Keras caches in ``~/.keras/models``;
            ``pth-package``: the module whose ``PTH_WEIGHTS[name]`` (a
            :class:`~labtf.backbones.pth_weights.PthWeights`) holds the checkpoint and
            its conversion plan.
        block_ends: layer names that end blocks, top first; fine-tuning ``n``
            blocks unfreezes every layer after ``block_ends[n - 1]``.
        builder: ``builder(input_tensor, weights)`` returning a feature model whose
            output is the ``cam_layer`` feature map (``pth-package`` builders get
            ``weights=None``; the checkpoint is loaded after).
        summary: one line for ``labtf backbones``.
    """

    name: str
    input_size: int
    preprocessing: str
    cam_layer: str
    weight_source: str
    builder: Callable = field(repr=False)
    block_ends: tuple[str, ...] = ()
    weight_file: str = ""
    summary: str = ""

    def build(self, input_tensor, weights: str | None):
        """Build the feature model on ``input_tensor`` (already preprocessed).

        Args:
            input_tensor: a Keras tensor of shape (None, S, S, 3).
            weights: ``"imagenet"`` or ``None``.

        Raises:
            LabtfError: ImageNet weights requested where none can be had.
        """
        if weights not in (None, "imagenet"):
            raise LabtfError(f"weights must be 'imagenet' or none, got {weights!r}")
        if weights and self.weight_source == "none":
            raise LabtfError(f"backbone {self.name} has no ImageNet weights; "
                             "use --weights none (train from scratch)")
        if self.weight_source != "pth-package":
            return self.builder(input_tensor, weights)
        model = self.builder(input_tensor, None)
        if weights:
            from labtf.backbones.pth_weights import load_pretrained

            load_pretrained(model, get_pth_weights(self.name))
        return model


def _keras_models_dir() -> Path:
    """Where Keras caches downloaded weights (``$KERAS_HOME/models``, default ~/.keras/models)."""
    import os

    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


def _keras_app(app_name: str, weight_file: str, **kwargs) -> Callable:
    """A builder for a ``keras.applications`` model with offline-friendly errors."""

    def build(input_tensor, weights):
        import keras

        app = getattr(keras.applications, app_name)
        if weights:
            cached = _keras_models_dir() / weight_file
            if not cached.is_file():
                log.info("downloading %s through Keras (cached in %s)", weight_file, cached.parent)
        try:
            return app(include_top=False, weights=weights, input_tensor=input_tensor, **kwargs)
        except Exception as exc:  # Keras raises a bare Exception on a failed download
            if weights and ("fetch failure" in str(exc) or "URL" in str(exc)):
                home = _keras_models_dir()
                raise LabtfError(f"could not download ImageNet weights {weight_file} (offline?); "
                                 f"place that file in {home}/ or use --weights none") from None
            raise

    return build


def _lite(variant: int) -> Callable:
    def build(input_tensor, weights):
        from labtf.backbones.efficientnet_lite import build_efficientnet_lite

        return build_efficientnet_lite(variant, input_tensor=input_tensor)

    return build


def _mobilenet_tv(input_tensor, weights):
    from labtf.backbones.mobilenet_tv import build_mobilenet_v2_tv

    return build_mobilenet_v2_tv(input_tensor=input_tensor)


def _classic(fn_name: str) -> Callable:
    def build(input_tensor, weights):
        from labtf.backbones import classic

        return getattr(classic, fn_name)(tuple(input_tensor.shape[1:]), input_tensor=input_tensor)

    return build


_LITE_BLOCKS = ("block6a_project_bn", "block5a_project_bn", "block4a_project_bn")
_LITE = "labtf.backbones.efficientnet_lite"

_SPECS = [
    BackboneSpec("efficientnet_lite0", 224, "lite", "top_activation", "pth-package", _lite(0),
                 _LITE_BLOCKS, _LITE,
                 "EfficientNet-Lite0 (4.7M), offline ImageNet weights; the default"),
    BackboneSpec("efficientnet_lite1", 240, "lite", "top_activation", "pth-package", _lite(1),
                 _LITE_BLOCKS, _LITE,
                 "EfficientNet-Lite1 (5.4M), offline ImageNet weights"),
    BackboneSpec("efficientnet_lite2", 260, "lite", "top_activation", "pth-package", _lite(2),
                 _LITE_BLOCKS, _LITE,
                 "EfficientNet-Lite2 (6.1M), offline ImageNet weights"),
    BackboneSpec("mobilenet_v2_tv", 224, "torch", "top_activation", "pth-package",
                 _mobilenet_tv, ("block6c_add", "block6a_project_bn", "block5a_project_bn"),
                 "labtf.backbones.mobilenet_tv",
                 "MobileNetV2 as torchvision builds it, offline ImageNet weights"),
    BackboneSpec("vgg16", 224, "caffe", "block5_conv3", "keras-download",
                 _keras_app("VGG16", "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"),
                 ("block4_pool", "block3_pool"), "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
                 "VGG-16 (poster: 90% top-1), keras.applications"),
    BackboneSpec("resnet50", 224, "caffe", "conv5_block3_out", "keras-download",
                 _keras_app("ResNet50", "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
                 ("conv5_block2_out", "conv5_block1_out", "conv4_block6_out"),
                 "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
                 "ResNet-50 (poster), keras.applications"),
    BackboneSpec("alexnet", 227, "torch", "top_activation", "none", _classic("build_alexnet"),
                 ("pool2",), "", "AlexNet (poster), built in labtf; trains from scratch"),
    BackboneSpec("googlenet", 224, "torch", "top_activation", "none", _classic("build_googlenet"),
                 ("inception_4e_concat", "inception_4d_concat"), "",
                 "GoogLeNet / Inception v1 (poster), built in labtf; trains from scratch"),
    BackboneSpec("inception_v3", 299, "tf", "mixed10", "keras-download",
                 _keras_app("InceptionV3", "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"),
                 ("mixed9", "mixed8"), "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
                 "Inception v3, keras.applications"),
    BackboneSpec("mobilenet_v2", 224, "tf", "out_relu", "keras-download",
                 _keras_app("MobileNetV2",
                            "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"),
                 ("block_15_add", "block_13_add", "block_10_add"),
                 "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
                 "MobileNetV2, keras.applications"),
    BackboneSpec("mobilenet_v3_small", 224, "none", "", "keras-download",
                 _keras_app("MobileNetV3Small",
                            "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"),
                 ("expanded_conv_9_add", "expanded_conv_7_add"),
                 "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
                 "MobileNetV3-Small, keras.applications (preprocessing built in)"),
    BackboneSpec("mobilenet_v3_large", 224, "none", "", "keras-download",
                 _keras_app("MobileNetV3Large",
                            "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5"),
                 ("expanded_conv_14_add", "expanded_conv_12_add"),
                 "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
                 "MobileNetV3-Large, keras.applications (preprocessing built in)"),
    BackboneSpec("efficientnet_b0", 224, "none", "top_activation", "keras-download",
                 _keras_app("EfficientNetB0", "efficientnetb0_notop.h5"),
                 ("block6d_add", "block5c_add"), "efficientnetb0_notop.h5",
                 "EfficientNetB0, keras.applications (preprocessing built in)"),
]

BACKBONES: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Add a backbone to :data:`BACKBONES` (the table below, a plug-in or a test).

    Args:
        spec: the new backbone; its name must not be taken.

    Returns:
        ``spec``.

    Raises:
        LabtfError: the name is taken, or the preprocessing or weight source is unknown.
    """
    if spec.name in BACKBONES:
        raise LabtfError(f"backbone '{spec.name}' is already registered")
    if spec.preprocessing not in PREPROCESSING:
        raise LabtfError(f"backbone {spec.name}: unknown preprocessing '{spec.preprocessing}'; "
                         f"choose one of: {', '.join(PREPROCESSING)}")
    if spec.weight_source not in WEIGHT_SOURCES:
        raise LabtfError(f"backbone {spec.name}: unknown weight source '{spec.weight_source}'; "
                         f"choose one of: {', '.join(WEIGHT_SOURCES)}")
    BACKBONES[spec.name] = spec
    return spec


for _spec in _SPECS:
    register_backbone(_spec)


def get_backbone(name: str) -> BackboneSpec:
    """Look a backbone up by name.

    Raises:
        LabtfError: unknown name (the message lists the valid ones).
    """
    try:
        return BACKBONES[name]
    except KeyError:
        raise LabtfError(f"unknown backbone '{name}'; choose one of: {', '.join(BACKBONES)}") from None


def get_pth_weights(name: str) -> "PthWeights":
    """The ``.pth`` checkpoint and conversion plan a ``pth-package`` backbone's module declares.

    Args:
        name: registry name.

    Returns:
        ``PTH_WEIGHTS[name]`` of the module named by the spec's ``weight_file``.

    Raises:
        LabtfError: not a registered ``pth-package`` backbone (the message lists them).
    """
    spec = BACKBONES.get(name)
    if spec is None or spec.weight_source != "pth-package":
        known = sorted(n for n, s in BACKBONES.items() if s.weight_source == "pth-package")
        raise LabtfError(f"no ImageNet weights known for backbone {name!r}; "
                         f"choose one of {', '.join(known)}")
    return importlib.import_module(spec.weight_file).PTH_WEIGHTS[name]
