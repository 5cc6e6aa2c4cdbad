import keras
import numpy as np
import pytest

from labtf.backbones import PREPROCESSING, get_backbone
from labtf.model import LOGITS, PROBS, Preprocess, build_classifier, set_precision


@pytest.mark.parametrize("mode", list(PREPROCESSING))
def test_preprocess_matches_formula(mode):
    p = PREPROCESSING[mode]
    x = np.random.default_rng(1).uniform(0, 255, (2, 5, 5, 3)).astype("float32")
    got = np.asarray(Preprocess(mode)(x))
    src = x[..., ::-1] if p["bgr"] else x
    want = (src - np.array(p["mean"])) / np.array(p["std"])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


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
