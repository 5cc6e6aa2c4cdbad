"""labtf.trunk_cache: cached frozen-trunk activations give the same model and train it."""
from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def lite0():
    from labtf.backbones import get_backbone
    from labtf.model import build_classifier

    spec = get_backbone("efficientnet_lite0")
    return spec, build_classifier(spec, 3, 64, weights=None)


def test_sub_model_after_the_boundary_equals_the_whole_model(lite0):
    import keras

    from labtf.trunk_cache import boundary_layer, sub_model

    spec, model = lite0
    x = np.random.default_rng(0).uniform(0, 255, (4, 64, 64, 3)).astype(np.float32)
    for blocks, fine in ((1, True), (2, True), (2, False)):
        name = boundary_layer(model, spec, blocks, fine)
        trunk = keras.Model(model.inputs, model.get_layer(name).output)
        head = sub_model(model, name)
        np.testing.assert_allclose(np.asarray(head(trunk(x))), np.asarray(model(x)), atol=1e-6)
    assert boundary_layer(model, spec, 1, True) == spec.block_ends[0]
    assert boundary_layer(model, spec, 2, True) == spec.block_ends[1]


def test_view_sequence_picks_view_by_epoch_and_is_seeded():
    from labtf.trunk_cache import ViewSequence

    k, n = 3, 10
    x = np.arange(k * n, dtype=np.float16).reshape(k, n, 1)     # value = view * n + image
    y = np.eye(2, dtype=np.float32)[np.arange(k * n) % 2].reshape(k, n, 2)
    seq = ViewSequence(x, y, 4, seed=7)
    assert len(seq) == 3
    seen = {}
    for epoch in range(5):
        seq.set_epoch(epoch)
        vals = np.concatenate([seq[i][0][:, 0] for i in range(len(seq))])
        assert sorted(vals.astype(int)) == list(range((epoch % k) * n, (epoch % k) * n + n))
        seen[epoch] = vals
    other = ViewSequence(x, y, 4, seed=7)
    other.set_epoch(4)                                  # a resumed run at epoch 4 sees the same
    assert np.array_equal(np.concatenate([other[i][0][:, 0] for i in range(3)]), seen[4])
    seq.set_epoch(1)
    assert not np.array_equal(np.concatenate([seq[i][0][:, 0] for i in range(3)]) - n, seen[0])


def test_compute_views_reuses_finished_views(tmp_path):
    import keras

    from labtf.trunk_cache import compute_views

    calls = []

    def make_ds(v):
        calls.append(v)
        rng = np.random.default_rng(v)
        return [(rng.random((2, 4, 4, 3)).astype(np.float32), np.eye(2, dtype=np.float32))]

    inp = keras.Input((4, 4, 3))
    trunk = keras.Model(inp, keras.layers.Lambda(lambda t: t * 2)(inp))
    x, y = compute_views(trunk, make_ds, 3, tmp_path, "train")
    assert x.shape == (3, 2, 4, 4, 3) and y.shape == (3, 2, 2) and calls == [0, 1, 2]
    (tmp_path / "train_x2.npy").unlink()               # killed while view 2 was written
    calls.clear()
    x2, _ = compute_views(trunk, make_ds, 3, tmp_path, "train")
    assert calls == [2] and np.array_equal(x, x2)


def test_cached_training_learns_a_separable_set(shared_data, tmp_path):
    """Frozen ImageNet features + the cached LP-FT recipe separate the synthetic shapes."""
    from labtf.config import TrainConfig
    from labtf.evaluation import evaluate
    from labtf.training import train

    cfg = TrainConfig(data=str(shared_data), split_file=str(tmp_path / "split.csv"),
                      image_size=96, batch_size=16, epochs=15, fine_tune_epochs=2,
                      fine_tune_blocks=1, early_stopping_patience=0, cache_views=2)
    run = train(cfg, tmp_path / "run", verbose=0)
    assert not (tmp_path / "run" / "backup").exists()   # the cache goes with the backups
    m = evaluate(run)
    assert m["accuracy"] >= 0.9, m["accuracy"]
    hist = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert len(hist) == 1 + 15 + 2
