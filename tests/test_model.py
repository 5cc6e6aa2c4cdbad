import keras
import numpy as np
import pytest

from labtf.backbones import PREPROCESSING, get_backbone
from labtf.model import LOGITS, PROBS, Preprocess, build_classifier, set_precision


#: The published constants, written out here (not read from the code's table):
#: torch = torchvision's ImageNet mean/std on 0..1 pixels (x 255 here), RGB;
#: caffe = Keras' imagenet_utils 'caffe' mode: BGR, mean subtracted, no std;
#: tf = Keras' 'tf' mode: x / 127.5 - 1 (to [-1, 1]);
#: lite = TF's EfficientNet-Lite builder: (x - 127) / 128; none = identity.
PUBLISHED = {
    "torch": (False, np.array([0.485, 0.456, 0.406]) * 255, np.array([0.229, 0.224, 0.225]) * 255),
    "caffe": (True, np.array([103.939, 116.779, 123.68]), np.ones(3)),
    "tf": (False, np.full(3, 127.5), np.full(3, 127.5)),
    "lite": (False, np.full(3, 127.0), np.full(3, 128.0)),
    "none": (False, np.zeros(3), np.ones(3)),
}


def test_every_preprocessing_mode_has_a_published_formula():
    assert set(PREPROCESSING) == set(PUBLISHED)


@pytest.mark.parametrize("mode", sorted(PUBLISHED))
def test_preprocess_matches_published_formula(mode):
    bgr, mean, std = PUBLISHED[mode]
    x = np.random.default_rng(1).uniform(0, 255, (2, 5, 5, 3)).astype("float32")
    got = np.asarray(Preprocess(mode)(x))
    src = x[..., ::-1] if bgr else x
    want = (src.astype(np.float64) - mean) / std
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    if mode == "tf":
        edges = np.asarray(Preprocess(mode)(np.array([[[[0, 127.5, 255]]]], "float32")))
        np.testing.assert_allclose(edges.ravel(), [-1, 0, 1], atol=1e-6)
    if mode == "caffe":  # a pure-red pixel lands in the last (R) channel, blue mean off the first
        red = np.asarray(Preprocess(mode)(np.array([[[[255, 0, 0]]]], "float32"))).ravel()
        np.testing.assert_allclose(red, [-103.939, -116.779, 255 - 123.68], atol=1e-3)


def test_unknown_preprocessing():
    from labtf.errors import LabtfError

    with pytest.raises(LabtfError, match="torch"):
        Preprocess("pytorch")


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_head_is_float32(policy):
    set_precision(policy)
    try:
        model = build_classifier(get_backbone("mobilenet_v2"), 4, 64, weights=None)
        assert model.get_layer("Conv1").compute_dtype == policy.split("_")[1]
        assert model.get_layer(LOGITS).compute_dtype == "float32"
        out = model(np.zeros((1, 64, 64, 3), "float32"))
        assert np.asarray(out).dtype == np.float32
    finally:
        set_precision("float32")


def test_save_load_roundtrip(tmp_path):
    model = build_classifier(get_backbone("efficientnet_lite0"), 3, 64, weights=None)
    x = np.random.default_rng(2).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras", compile=False)
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(again(x)), atol=1e-6)
    assert again.get_layer(PROBS).output.shape[-1] == 3
