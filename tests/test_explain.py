"""Saliency methods: tf-keras-vis matches a plain Grad-CAM, guided backprop really is guided."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

import cli
from labtf import LabtfError


@pytest.fixture(scope="module")
def explainer(trained_run):
    from labtf.explain.core import Explainer

    return Explainer.from_run(trained_run)


@pytest.fixture(scope="module")
def batch(trained_run, explainer):
    from labtf.manifest import read_manifest

    samples = [s for s in read_manifest(trained_run.file("split.csv"), validate=False).samples
               if s.split == "test"][:3]
    return np.stack([explainer.load(s.path) for s in samples]).astype(np.float32)


def test_tf_keras_vis_gradcam_matches_gradient_tape_reference(explainer, batch):
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.utils.scores import CategoricalScore

    from labtf.explain.core import gradcam_reference

    targets = [0, 1, 2]
    raw = Gradcam(explainer.logits_model, clone=False)(
        CategoricalScore(targets), batch, penultimate_layer=explainer.layer,
        seek_penultimate_conv_layer=False, expand_cam=False, normalize_cam=False)
    ref = gradcam_reference(explainer.logits_model, explainer.layer, batch, targets)
    assert raw.shape == ref.shape == (3, 2, 2)  # 64 px -> 2x2 top_activation
    assert np.abs(raw - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())
    assert ref.max() > 0


def _grads(model, x, idx):
    import tensorflow as tf

    xt = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        score = model(xt, training=False)[:, idx]
    return tape.gradient(score, xt).numpy()


def test_guided_backprop_differs_from_plain_gradients_on_relu_layer_model(explainer, batch):
    import keras
    from tf_keras_vis.utils.model_modifiers import GuidedBackpropagation

    from labtf.explain.guided import GuidedReLU

    plain = _grads(explainer.logits_model, batch[:1], 0)
    guided = _grads(explainer.guided_logits_model, batch[:1], 0)
    n_relu = sum(isinstance(lyr, keras.layers.ReLU) for lyr in explainer.logits_model.layers)
    assert n_relu > 30
    assert sum(isinstance(lyr, GuidedReLU) for lyr in explainer.guided_logits_model.layers) == n_relu
    rel = np.abs(guided - plain).sum() / np.abs(plain).sum()
    assert rel > 0.1, rel
    # the gap this closes: tf-keras-vis' modifier leaves ReLU layers alone -> plain gradients
    clone = keras.models.clone_model(explainer.logits_model)
    clone.set_weights(explainer.logits_model.get_weights())
    GuidedBackpropagation()(clone)
    np.testing.assert_allclose(_grads(clone, batch[:1], 0), plain, atol=1e-6)


def test_guided_clone_handles_activation_attributes_like_tf_keras_vis():
    import keras
    from tf_keras_vis.utils.model_modifiers import GuidedBackpropagation

    from labtf.explain.guided import guided_clone

    keras.utils.set_random_seed(1)
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu")(inp)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    out = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inp, out)
    x = np.random.default_rng(0).normal(size=(1, 16, 16, 3)).astype(np.float32)
    ours = _grads(guided_clone(model), x, 1)
    ref = keras.models.clone_model(model)
    ref.set_weights(model.get_weights())
    GuidedBackpropagation()(ref)
    theirs = _grads(ref, x, 1)
    assert np.abs(theirs - _grads(model, x, 1)).max() > 1e-4  # the modifier works here
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "faster-scorecam", "layercam",
                                    "saliency", "smoothgrad", "guided", "guided-gradcam"])
def test_every_method_gives_normalised_maps(explainer, batch, method):
    res = explainer.maps(method, batch[:2], [0, 1])
    assert res.maps.shape == (2, 64, 64) and res.maps.dtype == np.float32
    assert np.isfinite(res.maps).all() and res.maps.min() >= 0 and res.maps.max() <= 1
    assert res.maps.reshape(2, -1).max(axis=1).min() == pytest.approx(1.0)


def test_guided_gradcam_is_guided_times_cam(explainer, batch):
    cam = explainer.maps("gradcam", batch[:1], [2]).maps
    gb = explainer.maps("guided", batch[:1], [2]).rgb
    ggc = explainer.maps("guided-gradcam", batch[:1], [2]).rgb
    np.testing.assert_allclose(ggc, gb * cam[..., None], rtol=1e-5, atol=1e-9)


def test_unknown_layer_and_class_are_one_line_errors(trained_run, explainer, batch):
    from labtf.explain.core import Explainer

    with pytest.raises(LabtfError, match="try one of: .*top_activation"):
        Explainer.from_run(trained_run, layer="no_such_layer")
    with pytest.raises(LabtfError, match="the run knows: blue_bar, green_square, red_disc"):
        explainer.explain(batch[0], "gradcam", "cat")
    assert Explainer.from_run(trained_run, layer="top_conv").layer == "top_conv"


def test_mixed_bfloat16_model_is_explained_in_float32():
    import keras

    from labtf.backbones import get_backbone
    from labtf.explain.core import Explainer
    from labtf.model import build_classifier

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_classifier(get_backbone("efficientnet_lite0"), 2, 32, weights=None)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("top_conv").compute_dtype == "bfloat16"
    ex = Explainer(model, ["a", "b"], "top_activation", 32)
    assert ex.model.get_layer("top_conv").compute_dtype == "float32"
    x = np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(ex.predict(x), np.asarray(model(x), np.float64), atol=0.05)
    for m in ("gradcam", "guided-gradcam"):
        assert np.isfinite(ex.maps(m, x, [1]).maps).all()


def test_cli_explain_batch_with_a_corrupt_file(trained_run, batch, tmp_path):
    from labtf.manifest import read_manifest

    good = [s.path for s in read_manifest(trained_run.file("split.csv"), validate=False).samples
            if s.split == "test"][:2]
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out = tmp_path / "out"
    args = ["explain", str(trained_run.path), good[0], str(bad), good[1], "--method",
            "guided-gradcam", "--class", "red_disc", "--panel", "--out", str(out), "--batch-size", "2"]
    res = CliRunner().invoke(cli.main, args)
    assert res.exit_code == 1, res.output
    assert "broken.png: corrupt or truncated image" in res.output
    assert "1 of 3 image(s) could not be read" in res.output
    maps = sorted(out.glob("*_guided-gradcam.npy"))
    assert len(maps) == 2
    m = np.load(maps[0])
    assert m.shape == (64, 64) and m.dtype == np.float32
    assert (out / "sheet_guided-gradcam.png").is_file() and len(list(out.glob("*_panel.png"))) == 2
    assert f"sheet: {out / 'sheet_guided-gradcam.png'}" in res.output
    for p in [*maps, *out.glob("*_panel.png"), *out.glob("*_guided-gradcam.png")]:
        assert str(p) in res.output  # every output path is printed
    again = CliRunner().invoke(cli.main, args)
    assert again.exit_code == 2 and "already holds" in again.output
