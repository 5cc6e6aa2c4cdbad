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

    from labtf.cam_head import grad_cam

    targets = [0, 1, 2]
    raw = Gradcam(explainer.logits_model, clone=False)(
        CategoricalScore(targets), batch, penultimate_layer=explainer.layer,
        seek_penultimate_conv_layer=False, expand_cam=False, normalize_cam=False)
    ref = grad_cam(explainer.logits_model, batch, explainer.layer, np.array(targets),
                   normalize=False)
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


def _feats_and_grads(ex, x, classes):
    """Target-layer activations A and d logit / d A (GradientTape), float64 numpy."""
    import keras
    import tensorflow as tf

    sub = keras.Model(ex.logits_model.inputs,
                      [ex.logits_model.get_layer(ex.layer).output, ex.logits_model.output])
    with tf.GradientTape() as tape:
        feats, logits = sub(tf.convert_to_tensor(x), training=False)
        score = tf.gather(logits, classes, axis=1, batch_dims=1)
    return feats.numpy().astype(np.float64), tape.gradient(score, feats).numpy().astype(np.float64)


def _upsample_norm(cam, size):
    """Bilinear (scipy zoom, order 1) to the input side, then per-image min-max."""
    from scipy.ndimage import zoom

    cam = np.stack([zoom(c, (size / c.shape[0], size / c.shape[1]), order=1) for c in cam])
    return _norm(cam)


def _norm(maps):
    from labtf.maps import normalize_maps

    return normalize_maps(maps, floor="min")


def _input_grads(model, x, classes):
    import tensorflow as tf

    xt = tf.convert_to_tensor(x, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        score = tf.gather(model(xt, training=False), classes, axis=1, batch_dims=1)
    return tape.gradient(score, xt).numpy()


def _reference_map(ex, method, x, classes):
    """Each method's formula from the papers, written out with a GradientTape (None: no reference)."""
    from labtf.explain.methods import FASTER_SCORECAM_N, SMOOTHGRAD_NOISE, SMOOTHGRAD_SAMPLES

    size = x.shape[1]
    if method in ("gradcam", "gradcam++", "layercam"):
        a, g = _feats_and_grads(ex, x, classes)
        if method == "gradcam":  # Selvaraju et al.: alpha_k = mean of the gradient
            w = g.mean(axis=(1, 2), keepdims=True)
            cam = (w * a).sum(-1)
        elif method == "layercam":  # Jiang et al.: ReLU(gradient) weighs every location
            cam = (np.maximum(g, 0) * a).sum(-1)
        else:  # Chattopadhay et al. eq. 19 with exp(S) (it cancels in alpha)
            g2, g3 = g ** 2, g ** 3
            den = 2 * g2 + a.sum(axis=(1, 2), keepdims=True) * g3
            alpha = g2 / np.where(den != 0, den, 1.0)
            tot = alpha.sum(axis=(1, 2), keepdims=True)
            alpha = alpha / np.where(tot != 0, tot, 1.0)
            w = (alpha * np.maximum(g, 0)).sum(axis=(1, 2), keepdims=True)
            cam = (w * a).sum(-1)
        return _upsample_norm(np.maximum(cam, 0), size)
    if method == "saliency":  # Simonyan et al.: max over channels of |d logit / d x|
        return _norm(np.abs(_input_grads(ex.logits_model, x, classes)).max(-1))
    if method == "smoothgrad":  # Smilkov et al.: mean |grad| over noisy copies (same draws)
        sigma = SMOOTHGRAD_NOISE * (x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3)))
        noise = np.random.normal(0.0, 1.0, (SMOOTHGRAD_SAMPLES,) + x.shape)
        total = 0
        for k in range(SMOOTHGRAD_SAMPLES):
            noisy = x + noise[k] * sigma[:, None, None, None]
            total = total + np.abs(_input_grads(ex.logits_model, noisy, classes))
        return _norm((total / SMOOTHGRAD_SAMPLES).max(-1))
    if method == "faster-scorecam":  # Wang et al. Score-CAM on the top-variance channels
        from scipy.ndimage import zoom

        a, _ = _feats_and_grads(ex, x, classes)
        cams = []
        for i in range(len(x)):  # each image on its own: its top-N channels by spatial std
            keep = np.argsort(-a[i].std(axis=(0, 1)), kind="stable")[:FASTER_SCORECAM_N]
            ai = a[i][..., keep]
            up = zoom(ai, (size / ai.shape[0], size / ai.shape[1], 1), order=1, mode="nearest")
            lo, hi = up.min(axis=(0, 1)), up.max(axis=(0, 1))
            masks = np.moveaxis((up - lo) / (hi - lo + 1e-7), -1, 0)
            logits = np.asarray(ex.logits_model(x[i] * masks[..., None], training=False), np.float64)
            probs = np.exp(logits - logits.max(1, keepdims=True))
            weights = (probs / probs.sum(1, keepdims=True))[:, classes[i]]
            cams.append(np.einsum("hwk,k->hw", ai, weights))
        cam = np.stack(cams)
        return _upsample_norm(np.maximum(cam, 0), size)
    if method == "guided":  # Springenberg et al.: max |guided gradient| over channels
        return _norm(np.abs(_input_grads(ex.guided_logits_model, x, classes)).max(-1))
    return None


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "faster-scorecam", "layercam",
                                    "saliency", "smoothgrad", "guided", "guided-gradcam"])
def test_every_method_gives_normalised_maps_equal_to_a_reference(explainer, batch, method):
    x, classes = batch[:2], [0, 1]
    np.random.seed(7)  # SmoothGrad's noise comes from numpy's global generator
    res = explainer.maps(method, x, classes)
    assert res.maps.shape == (2, 64, 64) and res.maps.dtype == np.float32
    assert np.isfinite(res.maps).all()
    flat = res.maps.reshape(2, -1)
    # normalised and not constant: every map spans exactly 0..1 with many distinct values
    np.testing.assert_allclose(flat.min(axis=1), 0.0, atol=1e-7)
    np.testing.assert_allclose(flat.max(axis=1), 1.0, atol=1e-6)
    assert min(len(np.unique(m.round(4))) for m in flat) > 20
    assert np.abs(res.maps[0] - res.maps[1]).mean() > 0.02  # two images, two different maps
    np.random.seed(7)
    ref = _reference_map(explainer, method, x, classes)
    if ref is not None:
        np.testing.assert_allclose(res.maps, ref, atol=2e-3)


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


def test_guided_maps_are_drawn_as_gradient_images_not_jet_overlays():
    """A sparse guided map as a jet overlay is a blue wash; as a gradient image it is grey
    where the gradient is zero and shows the signed RGB gradient where it is not."""
    from labtf.explain.core import Explanation
    from labtf.explain.render import explanation_tile, heat

    img = np.full((64, 64, 3), 200, np.uint8)
    rgb = np.zeros((64, 64, 3), np.float32)
    rgb[20:30, 20:30, 0] = 1.0                          # red channel gradient in one patch
    m = np.abs(rgb).max(-1)
    e = Explanation("guided-gradcam", m, 0, "a", 0.9, "a", 0.9, "conv", rgb=rgb)
    tile = np.asarray(explanation_tile(img, e, "guided-gradcam"))[:224]   # without the caption
    grey = tile[5:60, 5:60]
    assert np.abs(grey.astype(int) - grey.mean()).max() <= 2 and 110 < grey.mean() < 145
    patch = tile[int(22 * 3.5):int(28 * 3.5), int(22 * 3.5):int(28 * 3.5)].reshape(-1, 3)
    assert (patch[:, 0] > 200).all() and (patch[:, 1] < 140).all()
    blue = heat(np.zeros((1, 1)))[0, 0]                 # what a jet overlay paints at 0
    assert blue[2] > 100 and blue[0] < 50 and not (grey[..., 2] > grey[..., 0] + 20).any()
    plain = Explanation("gradcam", m, 0, "a", 0.9, "a", 0.9, "conv")
    over = np.asarray(explanation_tile(img, plain, "gradcam"))[:224]
    assert over[5:60, 5:60, 2].mean() > over[5:60, 5:60, 0].mean() + 40   # a heat overlay


def test_a_method_registered_at_run_time_runs_end_to_end_through_the_cli(trained_run, tmp_path,
                                                                         monkeypatch):
    """Adding a method = its function + one METHODS line: nothing else is edited."""
    import json
    from pathlib import Path

    from labtf.explain.core import MapResult
    from labtf.explain.registry import METHODS, Method
    from labtf.manifest import read_manifest
    from labtf.maps import normalize_maps

    def brightness(ex, x, classes):  # the toy: a map that is the input's brightness
        return MapResult(normalize_maps(x.mean(axis=-1), floor="min"))

    monkeypatch.setitem(METHODS, "toy", Method(brightness))
    images = [s.path for s in read_manifest(trained_run.file("split.csv"), validate=False).samples
              if s.split == "test"][:2]
    out = tmp_path / "toy"
    res = CliRunner().invoke(cli.main, ["explain", str(trained_run.path), *images, "--method",
                                        "toy", "--out", str(out)])
    assert res.exit_code == 0, res.output
    stems = [Path(p).stem for p in images]
    assert sorted(f.name for f in out.iterdir()) == sorted(
        [f"{s}_toy.{ext}" for s in stems for ext in ("npy", "png")] + ["sheet_toy.png"])
    assert f"sheet: {out / 'sheet_toy.png'}" in res.output
    from labtf.explain.core import Explainer

    ex = Explainer.from_run(trained_run)
    img = ex.load(images[0]).astype(np.float32)
    first = np.load(out / f"{stems[0]}_toy.npy")
    np.testing.assert_allclose(first, normalize_maps(img.mean(-1)[None], floor="min")[0],
                               atol=1e-6)
    ev = CliRunner().invoke(cli.main, ["explain-eval", str(trained_run.path), "--methods", "toy",
                                       "--limit", "3", "--steps", "4", "--sanity-images", "1",
                                       "--out", str(tmp_path / "eval")])
    assert ev.exit_code == 0, ev.output
    assert "| toy |" in ev.output
    toy = json.loads((tmp_path / "eval" / "explain_eval.json").read_text())["methods"]["toy"]
    # the brightness map ignores the model: parameter randomization leaves it unchanged
    assert toy["rho_top_random"] == pytest.approx(1.0) and toy["passes_randomization"] is False
