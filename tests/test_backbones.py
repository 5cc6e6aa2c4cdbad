"""Every registry entry builds, exposes its CAM layer and its block boundaries."""
import keras
import numpy as np
import pytest

from labtf.backbones import BACKBONES, PREPROCESSING, get_backbone
from labtf.errors import LabtfError
from labtf.model import build_classifier, cam_layer_name, freeze_backbone, unfreeze_top

SMALL = {"inception_v3": 96, "alexnet": 96}


@pytest.mark.parametrize("name", list(BACKBONES))
def test_registry_entry_builds(name):
    spec = BACKBONES[name]
    assert spec.preprocessing in PREPROCESSING
    size = SMALL.get(name, 64)
    model = build_classifier(spec, 3, size, weights=None)
    x = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32")
    probs = np.asarray(model(x, training=False))
    assert probs.shape == (2, 3) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    cam = model.get_layer(cam_layer_name(model, spec))
    assert len(cam.output.shape) == 4
    freeze_backbone(model)
    assert len(model.trainable_weights) == 2  # the Dense head only
    changed = unfreeze_top(model, spec, 1)
    assert 0 < changed
    assert all(not layer.trainable for layer in model.layers
               if isinstance(layer, keras.layers.BatchNormalization))


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(LabtfError, match="efficientnet_lite0.*vgg16"):
        get_backbone("vgg-16")


def test_scratch_only_backbone_refuses_imagenet():
    with pytest.raises(LabtfError, match="has no ImageNet weights"):
        build_classifier(get_backbone("alexnet"), 3, 96, weights="imagenet")


def test_offline_keras_download_gives_one_line(monkeypatch, tmp_path):
    """keras.applications weights on an offline machine: one line naming the file."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))

    def offline(*args, **kwargs):  # what keras.utils.get_file raises when offline
        raise Exception("URL fetch failure on https://example.invalid/x.h5: None -- no network")

    monkeypatch.setattr("keras.src.utils.file_utils.get_file", offline)
    monkeypatch.setattr("keras.utils.get_file", offline)
    import keras.src.applications.vgg16 as vgg

    monkeypatch.setattr(vgg.file_utils, "get_file", offline)
    with pytest.raises(LabtfError) as info:
        build_classifier(get_backbone("vgg16"), 3, 64, weights="imagenet")
    msg = str(info.value)
    assert "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in msg and "\n" not in msg
