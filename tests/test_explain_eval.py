"""Faithfulness metrics: deletion/insertion on a planted-object model, randomization, masks."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import cli


def _planted_model(size: int = 32):
    """Class 1 iff the top-left quarter holds fine red texture (blurring removes it)."""
    import keras
    from keras import ops

    inp = keras.Input((size, size, 3))
    q = size // 2

    def texture(x):
        red = x[:, :q, :q, 0]
        return ops.mean(ops.abs(red[:, :, 1:] - red[:, :, :-1]), axis=(1, 2)) / 255.0

    energy = keras.layers.Lambda(texture)(inp)
    logit = keras.layers.Lambda(lambda e: ops.stack([ops.zeros_like(e), 10.0 * (e - 0.45)], -1))(
        energy)
    return keras.Model(inp, keras.layers.Activation("softmax")(logit))


def test_oracle_map_beats_random_on_planted_object_model():
    from labtf.explain.metrics import auc, deletion_insertion

    size, q = 32, 16
    model = _planted_model(size)
    predict = lambda x: np.asarray(model(x))  # noqa: E731
    rng = np.random.default_rng(0)
    oracle = np.zeros((size, size), np.float32)
    oracle[:q, :q] = 1.0
    oracle += rng.random((size, size)).astype(np.float32) * 1e-3  # break ties inside/outside
    checker = (np.indices((q, q)).sum(0) % 2) * 230.0 + 20.0
    scores = {"oracle": [], "random": []}
    for _ in range(4):
        img = rng.uniform(100, 140, (size, size, 3)).astype(np.float32)
        img[:q, :q, 0] = checker  # the planted object: fine red texture
        assert predict(img[None])[0, 1] > 0.95
        for name, m in (("oracle", oracle), ("random", rng.random((size, size)))):
            d, i = deletion_insertion(predict, img, m, 1, steps=16)
            assert i[0] < 0.05 and i[-1] > 0.95  # blurred start has no texture
            scores[name].append((auc(d), auc(i)))
    o, r = np.mean(scores["oracle"], axis=0), np.mean(scores["random"], axis=0)
    assert o[0] < r[0] - 0.2, (o, r)  # deletion: oracle kills the class much sooner
    assert o[1] > r[1] + 0.2, (o, r)  # insertion: oracle restores it much sooner


def test_auc_and_curve_endpoints():
    from labtf.explain.metrics import auc

    assert auc(np.ones(17)) == pytest.approx(1.0)
    assert auc(np.linspace(0, 1, 5)) == pytest.approx(0.5)


def test_spearman_identical_reversed_and_unrelated_maps():
    from scipy.stats import rankdata

    from labtf.explain.metrics import spearman

    rng = np.random.default_rng(4)
    a = rng.random((16, 16))
    assert spearman(a, a) == pytest.approx(1.0)
    assert spearman(a, a ** 3 + 5) == pytest.approx(1.0)  # monotone: same ranks
    assert spearman(a, -a) == pytest.approx(-1.0)  # reversed ranks
    assert spearman(a, 1 - a ** 2) == pytest.approx(-1.0)
    b = rng.random((16, 16))
    ra, rb = rankdata(a.ravel()), rankdata(b.ravel())
    want = np.corrcoef(ra, rb)[0, 1]  # Pearson r of the ranks, written out
    assert spearman(a, b) == pytest.approx(want, abs=1e-12) and abs(want) < 0.2
    c = a.copy()
    c.ravel()[:40] = a.ravel()[40:80]  # a partly shuffled copy: in between
    assert 0.3 < spearman(a, c) < 0.95
    assert spearman(a, np.zeros_like(a)) == 0.0 and spearman(np.ones(4), a[0, :4]) == 0.0


def test_spearman_of_a_different_models_maps_is_low(trained_run):
    """Maps of the run vs an untrained model of the same shape: rho well below 0.5."""
    import keras

    from labtf.backbones import get_backbone
    from labtf.explain.core import Explainer
    from labtf.explain.label_randomization import label_randomization_test
    from labtf.manifest import read_manifest
    from labtf.model import build_classifier

    ex = Explainer.from_run(trained_run)
    paths = [s.path for s in read_manifest(trained_run.file("split.csv"), validate=False).samples
             if s.split == "test"][:3]
    x = np.stack([ex.load(p) for p in paths]).astype(np.float32)
    targets = [int(i) for i in ex.predict(x).argmax(1)]
    keras.utils.set_random_seed(123)
    other = Explainer(build_classifier(get_backbone("efficientnet_lite0"), 3, 64, weights=None),
                      ex.classes, ex.layer, 64)
    original = {m: list(ex.maps(m, x, targets).maps) for m in ("gradcam", "saliency")}
    rho = label_randomization_test(other, x, targets, original)
    assert rho["gradcam"] < 0.5 and rho["saliency"] < 0.5, rho
    assert label_randomization_test(ex, x, targets, original) == pytest.approx(
        {"gradcam": 1.0, "saliency": 1.0})


def test_deletion_insertion_curves_by_hand():
    """A model whose class-0 probability is the mean red value / 255: the curves follow directly."""
    from scipy.ndimage import gaussian_filter

    from labtf.explain.metrics import deletion_insertion

    def predict(x):
        p = x[..., 0].mean(axis=(1, 2)) / 255.0
        return np.stack([p, 1 - p], axis=1)

    img = np.zeros((4, 4, 3), np.float32)
    img[..., 0] = np.arange(16, dtype=np.float32).reshape(4, 4) * 16  # red 0..240
    sal = np.arange(16, dtype=np.float32)[::-1].reshape(4, 4)  # pixel 0 most salient
    fill = np.array([40.0, 0.0, 0.0], np.float32)
    d, i = deletion_insertion(predict, img, sal, 0, steps=4, blur_sigma=1.0, fill=fill)
    red = img[..., 0].ravel()
    blur = gaussian_filter(img, sigma=(1.0, 1.0, 0))[..., 0].ravel()
    want_d = [(40.0 * k + red[k:].sum()) / 16 / 255 for k in (0, 4, 8, 12, 16)]
    want_i = [(red[:k].sum() + blur[k:].sum()) / 16 / 255 for k in (0, 4, 8, 12, 16)]
    np.testing.assert_allclose(d, want_d, rtol=1e-5)
    np.testing.assert_allclose(i, want_i, rtol=1e-5)
    d1, _ = deletion_insertion(predict, img, sal, 1, steps=4, blur_sigma=1.0, fill=fill)
    np.testing.assert_allclose(d1, 1 - np.array(want_d), rtol=1e-5)  # the target's column
    d2, _ = deletion_insertion(predict, img, -sal, 0, steps=2, blur_sigma=1.0)  # reversed order
    np.testing.assert_allclose(d2, [red.sum() / 16 / 255, red[:8].sum() / 16 / 255, 0], atol=1e-7)
    assert len(deletion_insertion(predict, img, sal, 0)[0]) == 17  # default: 16 steps


def test_pointing_game_tolerance_is_15_px():
    from labtf.explain.metrics import mask_scores

    mask = np.zeros((100, 100), bool)
    mask[40:60, 40:60] = True
    for peak_col, hit in ((73, True), (74, True), (75, False)):  # mask ends at col 59
        m = np.zeros((100, 100), np.float32)
        m[50, peak_col] = 1.0
        assert mask_scores(m, mask)[0] is hit
    m = np.zeros((100, 100), np.float32)
    m[40:60, 40:50] = 1.0
    m[0:20, 0:10] = 1.0
    assert mask_scores(m, mask)[1] == pytest.approx(0.5)
    assert mask_scores(np.zeros((100, 100), np.float32), mask)[1] == 0.0  # empty map: no energy


def test_randomization_restores_weights_and_flags_guided_backprop(trained_run):
    from labtf.explain.core import Explainer
    from labtf.explain.faithfulness import layer_groups, randomization_test
    from labtf.manifest import read_manifest

    ex = Explainer.from_run(trained_run)
    paths = [s.path for s in read_manifest(trained_run.file("split.csv"), validate=False).samples
             if s.split == "test"][:2]
    x = np.stack([ex.load(p) for p in paths]).astype(np.float32)
    before = [w.copy() for w in ex.logits_model.get_weights()]
    targets = [int(i) for i in ex.predict(x).argmax(1)]
    curves = randomization_test(ex, x, targets, ["gradcam", "guided"], seed=0)
    groups = [g for g, _ in layer_groups(ex.logits_model)]
    assert groups[0] == "logits" and groups[-1] == "stem"
    assert [g for g, _ in curves["guided"]] == groups
    for a, b in zip(before, ex.logits_model.get_weights()):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(before, ex.guided_logits_model.get_weights()):
        np.testing.assert_array_equal(a, b)
    # Adebayo et al.: guided backprop barely notices a re-drawn class layer
    assert curves["guided"][0][1] > 0.9, curves["guided"][:3]
    # ... while Grad-CAM of a model re-drawn down to the stem shares little with the original
    assert all(-1 <= r <= 1 for c in curves.values() for _, r in c)
    assert curves["gradcam"][-1][1] < 0.5, curves["gradcam"]


def test_cli_explain_eval_with_masks(trained_run, tmp_path):
    from labtf.manifest import read_manifest

    samples = [s for s in read_manifest(trained_run.file("split.csv"), validate=False).samples
               if s.split == "test"]  # --limit 3 draws one image per class from these
    masks = _write_masks(samples, tmp_path / "masks")
    out = tmp_path / "eval"
    res = CliRunner().invoke(cli.main, [
        "explain-eval", str(trained_run.path), "--methods", "gradcam,guided", "--limit", "3",
        "--steps", "8", "--sanity-images", "1", "--masks", str(masks), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "| gradcam |" in res.output and "Cascading randomization" in res.output
    data = json.loads((out / "explain_eval.json").read_text())
    assert data["n_images"] == 3 and data["n_masks"] == 3 and data["limit"] == 3
    g = data["methods"]["gradcam"]
    assert 0 <= g["deletion"] <= 1 and 0 <= g["insertion"] <= 1
    assert 0 <= g["energy"] <= 1 and g["pointing"] in (0.0, 1 / 3, 2 / 3, 1.0)
    assert isinstance(g["passes_randomization"], bool)
    assert {"pointing_correct", "energy_correct", "per_class"} <= set(g)
    assert set(g["per_class"]) <= set(trained_run.classes)
    md = (out / "explain_eval.md").read_text()
    assert md.startswith("Faithfulness on 3 image(s)") and "| pointing, correct predictions |" in md
    assert "Pointing game / energy in mask per class" in md
    assert f"written: {out / 'explain_eval.json'}" in res.output
    assert f"written: {out / 'explain_eval.md'}" in res.output
    bad = CliRunner().invoke(cli.main, ["explain-eval", str(trained_run.path), "--methods", "x"])
    assert bad.exit_code == 2 and "unknown method 'x'" in bad.output


def test_shuffled_manifest_permutes_training_labels_only(trained_run, tmp_path):
    from collections import Counter

    from labtf.explain.label_randomization import shuffled_manifest
    from labtf.manifest import read_manifest

    orig = read_manifest(trained_run.file("split.csv"), validate=False).samples
    new = read_manifest(shuffled_manifest(trained_run, tmp_path / "s.csv", seed=3),
                        validate=False).samples
    fit = [s for s in orig if s.split != "test"]
    shuffled = {s.path: s for s in new if s.split == "train"}
    assert len(shuffled) == len(fit) and not any(s.split == "val" for s in new)
    assert Counter(s.label for s in shuffled.values()) == Counter(s.label for s in fit)
    moved = sum(shuffled[s.path].label != s.label for s in fit)
    assert moved >= len(fit) // 2, moved
    assert {(s.path, s.label) for s in new if s.split == "test"} == \
        {(s.path, s.label) for s in orig if s.split == "test"}


def test_label_randomization_identical_twin_scores_one(trained_run):
    from labtf.explain.core import Explainer
    from labtf.explain.label_randomization import label_randomization_test
    from labtf.manifest import read_manifest

    ex = Explainer.from_run(trained_run)
    paths = [s.path for s in read_manifest(trained_run.file("split.csv"), validate=False).samples
             if s.split == "test"][:2]
    x = np.stack([ex.load(p) for p in paths]).astype(np.float32)
    targets = [int(i) for i in ex.predict(x).argmax(1)]
    original = {"saliency": list(ex.maps("saliency", x, targets).maps)}
    rho = label_randomization_test(ex, x, targets, original)
    assert rho["saliency"] == pytest.approx(1.0)


@pytest.mark.slow  # trains the shuffled-label twin
def test_cli_explain_eval_label_randomization(trained_run, tmp_path):
    twin = tmp_path / "twin"
    args = ["explain-eval", str(trained_run.path), "--methods", "gradcam,guided", "--limit", "3",
            "--steps", "4", "--sanity-images", "0", "--out", str(tmp_path / "eval"),
            "--label-randomization", str(twin)]
    res = CliRunner().invoke(cli.main, args)
    assert res.exit_code == 0, res.output
    assert "rho, labels shuffled" in res.output and "Shuffled-label twin" in res.output
    data = json.loads((tmp_path / "eval" / "explain_eval.json").read_text())
    for m in ("gradcam", "guided"):
        r = data["methods"][m]
        assert -1 <= r["rho_labels_random"] <= 1
        assert r["passes_label_randomization"] == (r["rho_labels_random"] < 0.5)
    lr = data["label_randomization"]
    assert lr["run"] == str(twin) and 0 <= lr["test_accuracy"] <= 1
    assert json.loads((twin / "config.json").read_text())["early_stopping_patience"] == 0
    before = (twin / "model.keras").stat().st_mtime_ns
    again = CliRunner().invoke(cli.main, args)  # a finished twin is reused, not retrained
    assert again.exit_code == 0, again.output
    assert (twin / "model.keras").stat().st_mtime_ns == before
    own = CliRunner().invoke(cli.main, args[:-1] + [str(trained_run.path)])
    assert own.exit_code == 2 and "not a shuffled-label twin" in own.output


def test_even_sample_spreads_across_classes_seeded_and_deterministic():
    from collections import Counter

    from labtf.explain.stream import even_sample

    labels = ["a"] * 10 + ["b"] * 5 + ["c"] * 2
    pick = even_sample(labels, 9, seed=0)
    assert pick == sorted(pick) and len(set(pick)) == 9
    assert Counter(labels[i] for i in pick) == {"a": 4, "b": 3, "c": 2}  # c gives all it has
    assert even_sample(labels, 9, seed=0) == pick
    assert any(even_sample(labels, 9, seed=s) != pick for s in range(1, 5))
    assert Counter(labels[i] for i in even_sample(labels, 3, seed=1)) == {"a": 1, "b": 1, "c": 1}
    assert even_sample(labels, None) == even_sample(labels, 99) == list(range(17))


def _test_samples(run, n):
    from labtf.manifest import read_manifest

    return [s for s in read_manifest(run.file("split.csv"), validate=False).samples
            if s.split == "test"][:n]


def _write_masks(samples, folder):
    folder.mkdir(exist_ok=True)
    for s in samples:  # the shapes are saturated colours on a grey-ish background
        rgb = np.asarray(Image.open(s.path).convert("RGB")).astype(int)
        obj = (rgb.max(-1) - rgb.min(-1)) > 90
        Image.fromarray((obj * 255).astype(np.uint8)).save(folder / f"{Path(s.path).stem}.png")
    return folder


def test_streaming_gives_the_same_scores_for_any_batch_size(trained_run, tmp_path, caplog):
    import logging

    from labtf.explain.core import PREDICT_BATCH, Explainer
    from labtf.explain.faithfulness import evaluate_methods

    samples = _test_samples(trained_run, 6)
    masks = _write_masks(samples, tmp_path / "masks")
    paths = [s.path for s in samples]
    labels = [trained_run.classes.index(s.label) for s in samples]
    ex = Explainer.from_run(trained_run)
    seen = {"maps": 0, "model": 0}
    maps, pob = ex.maps, ex.model.predict_on_batch

    def spy_maps(method, x, classes):
        seen["maps"] = max(seen["maps"], len(x))
        return maps(method, x, classes)

    def spy_pob(x):
        seen["model"] = max(seen["model"], len(x))
        return pob(x)

    ex.maps, ex.model.predict_on_batch = spy_maps, spy_pob
    results = {}
    for bs in (1, 4, 6):
        seen.update(maps=0, model=0)
        with caplog.at_level(logging.INFO, logger="labtf.explain.stream"):
            caplog.clear()
            results[bs] = evaluate_methods(ex, paths, labels, ["gradcam", "guided"], steps=4,
                                           mask_dir=masks, sanity_images=0, batch_size=bs)
        assert seen["maps"] == bs and seen["model"] <= PREDICT_BATCH  # never all images at once
        progress = [r.getMessage() for r in caplog.records if "images/s" in r.getMessage()]
        assert len(progress) == -(-6 // bs) and progress[-1].startswith("explain-eval: 6/6 images")
    ref = results[6]
    assert ref["n_images"] == 6 and ref["n_masks"] == 6
    assert ref["n_correct"] == round(ref["accuracy"] * 6)
    for bs in (1, 4):
        assert results[bs]["n_correct"] == ref["n_correct"]
        for m in ("random", "gradcam", "guided"):
            a, b = results[bs]["methods"][m], ref["methods"][m]
            for key in ("deletion", "insertion", "pointing", "energy", "pointing_correct",
                        "energy_correct"):
                assert a[key] == pytest.approx(b[key], abs=1e-4), (bs, m, key)
            for c, pc in b["per_class"].items():
                assert a["per_class"][c]["n"] == pc["n"]
                assert a["per_class"][c]["pointing"] == pytest.approx(pc["pointing"], abs=1e-4)
                assert a["per_class"][c]["energy"] == pytest.approx(pc["energy"], abs=1e-4)
    g = ref["methods"]["gradcam"]
    assert sum(pc["n"] for pc in g["per_class"].values()) == 6
    weighted = sum(pc["pointing"] * pc["n"] for pc in g["per_class"].values()) / 6
    assert weighted == pytest.approx(g["pointing"])


def test_random_baseline_map_does_not_depend_on_the_batch(explainer_for_run):
    ex = explainer_for_run
    x = np.random.default_rng(1).uniform(0, 255, (3, ex.image_size, ex.image_size, 3))
    x = x.astype(np.float32)
    together = ex.maps("random", x, [0, 0, 0]).maps
    alone = np.stack([ex.maps("random", x[i:i + 1], [0]).maps[0] for i in range(3)])
    np.testing.assert_array_equal(together, alone)
    assert not np.array_equal(together[0], together[1])


@pytest.fixture
def explainer_for_run(trained_run):
    from labtf.explain.core import Explainer

    return Explainer.from_run(trained_run)
