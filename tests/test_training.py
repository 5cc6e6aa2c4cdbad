import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY

from labtf.config import TrainConfig
from labtf.errors import LabtfError
from labtf.training import class_weights, train

ROOT = Path(__file__).resolve().parent.parent


def test_run_folder_contents(trained_run):
    files = {p.name for p in trained_run.path.iterdir()}
    for name in ("model.keras", "classes.json", "config.json", "run.json", "split.csv",
                 "history.csv", "history.png", "metrics.json", "confusion.csv", "confusion.md",
                 "confusion.png"):
        assert name in files, name
    assert "backup" not in files
    with open(trained_run.file("history.csv")) as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["stage"]) for r in rows] == [1, 1, 2]
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(rows[0])
    cfg = json.loads(trained_run.file("config.json").read_text())
    assert TrainConfig.from_dict(cfg).backbone == "efficientnet_lite0"
    meta = trained_run.meta
    assert meta["cam_layer"] == "top_activation" and meta["image_size"] == 64
    assert meta["n_train"] + meta["n_val"] + meta["n_test"] == 60


def test_training_learns_a_separable_set(tmp_path):
    """Lite0's real ImageNet features (frozen) + the trained head separate the three synthetic
    classes (colour + shape): >= 90% on held-out images, where chance is 33%."""
    from conftest import make_dataset

    from labtf.evaluation import evaluate

    data = make_dataset(tmp_path / "data", per_class=24, seed=5, size=64)
    cfg = TrainConfig(data=str(data), weights="imagenet", image_size=64, batch_size=8, epochs=12,
                      learning_rate=3e-3, augment=False, fine_tune_epochs=0,
                      early_stopping_patience=0, test_fraction=0.3, val_fraction=0.1,
                      split_file=str(tmp_path / "split.csv"))
    run = train(cfg, tmp_path / "run", verbose=0)
    metrics = evaluate(run)
    assert metrics["n_test"] >= 18
    assert metrics["accuracy"] >= 0.9, metrics["confusion_matrix"]
    with open(run.file("history.csv")) as fh:
        losses = [float(r["loss"]) for r in csv.DictReader(fh)]
    assert len(losses) == 12 and losses[-1] < 0.7 * losses[0], losses


def test_existing_run_is_not_overwritten(trained_run, shared_data):
    before = trained_run.file("model.keras").stat().st_mtime_ns
    with pytest.raises(LabtfError, match="already exists.*--resume"):
        train(TrainConfig(data=str(shared_data), **TINY), trained_run.path)
    assert trained_run.file("model.keras").stat().st_mtime_ns == before


def test_class_weights_balance(tiny_data):
    from labtf.manifest import DatasetIndex, Sample

    samples = [Sample(f"{i}", "a", "train") for i in range(30)] + \
        [Sample(f"b{i}", "b", "train") for i in range(10)]
    w = class_weights(DatasetIndex(tiny_data, samples, ["a", "b"]))
    assert w[1] == pytest.approx(3 * w[0]) and np.mean([30 * w[0], 10 * w[1]]) == pytest.approx(20)


def test_unknown_config_key():
    with pytest.raises(LabtfError, match="unknown config key.*'epoch'.*valid keys: data"):
        TrainConfig.from_dict({"data": "x", "epoch": 3})
    with pytest.raises(LabtfError, match="mixed_bfloat16"):
        TrainConfig(data="x", mixed_precision="fp16")


def _cli(*args):
    return [sys.executable, str(ROOT / "cli.py"), *args]


@pytest.mark.slow  # trains, kills and resumes a subprocess
def test_killed_run_resumes(tmp_path, shared_data):
    """Kill a real training process after its first epoch checkpoint, then --resume it."""
    out = tmp_path / "run"
    args = ["train", str(shared_data), "--backbone", "efficientnet_lite0", "--weights", "none",
            "--image-size", "64", "--batch-size", "8", "--epochs", "30", "--fine-tune-epochs", "1",
            "--fine-tune-blocks", "1", "--patience", "0", "--out", str(out)]
    env = {**os.environ, "LABTF_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen(_cli(*args), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    log = out / "history_stage1.csv"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if log.is_file() and len(log.read_text().splitlines()) >= 3:  # header + 2 epochs
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(log.read_text().splitlines()) - 1
    assert not (out / "model.keras").exists()
    res = subprocess.run(_cli(*args[:-2], "--out", str(out), "--resume"), env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (out / "model.keras").is_file()
    with open(log) as fh:
        epochs = [int(r["epoch"]) for r in csv.DictReader(fh)]
    # the resumed process continues at the epoch after the last checkpoint, not at 0
    assert epochs[:done] == list(range(done)) and epochs[done] in (done - 1, done)
    assert epochs[-1] == 29 and len(epochs) <= 31
    assert json.loads((out / "state.json").read_text())["done"] == [1, 2]


def test_history_merge_skips_na_cells(tmp_path):
    from labtf.training import _merge_history

    (tmp_path / "history_stage1.csv").write_text("epoch,accuracy,loss,val_loss\n0,0.5,1.2,NA\n1,0.7,0.9,\n")
    (tmp_path / "history_stage2.csv").write_text("epoch,accuracy,loss,val_loss\n0,0.8,0.6,0.7\n")
    rows = _merge_history(tmp_path)
    assert [r["epoch"] for r in rows] == [1, 2, 3] and [r["stage"] for r in rows] == [1, 1, 2]
    assert "val_loss" not in rows[0] and rows[2]["val_loss"] == 0.7
    assert (tmp_path / "history.csv").read_text().splitlines()[0] == "epoch,stage,accuracy,loss,val_loss"


def test_best_checkpoint_loads_without_optimizer_mismatch(tmp_path):
    # Stage 2 compiles a new optimizer over more variables than the stage that wrote the
    # best checkpoint; loading it must restore the model weights without a mismatch warning.
    import warnings

    import keras

    from labtf.training import BEST, _load_best

    keras.utils.set_random_seed(0)
    inp = keras.Input((4,))
    hidden = keras.layers.Dense(3, name="hidden")
    model = keras.Model(inp, keras.layers.Dense(2, name="out")(hidden(inp)))
    x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    y = np.eye(2, dtype="float32")[(x[:, 0] > 0).astype(int)]
    hidden.trainable = False
    model.compile(optimizer=keras.optimizers.Adam(0.1), loss="categorical_crossentropy")
    model.fit(x, y, epochs=1, verbose=0)
    model.save_weights(tmp_path / BEST)
    saved = [w.copy() for w in model.get_weights()]
    hidden.trainable = True
    model.compile(optimizer=keras.optimizers.Adam(0.1), loss="categorical_crossentropy")
    model.fit(x, y, epochs=2, verbose=0)
    assert not all(np.array_equal(a, b) for a, b in zip(saved, model.get_weights()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _load_best(model, tmp_path)
    for a, b in zip(saved, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_kept_weights_are_the_lowest_val_loss_epoch(trained_run):
    import keras

    from labtf.data import make_dataset
    from labtf.manifest import read_manifest

    meta, cfg = trained_run.meta, trained_run.config
    with open(trained_run.file("history.csv")) as fh:
        rows = list(csv.DictReader(fh))
    best = min(rows, key=lambda r: float(r["val_loss"]))
    assert meta["monitor"] == "val_loss"
    assert meta["kept_epoch"]["epoch"] == int(best["epoch"])
    assert meta["best_val_loss"] == pytest.approx(float(best["val_loss"]))
    # the saved model is that epoch's: it reproduces its validation loss
    val = [s for s in read_manifest(trained_run.file("split.csv"), validate=False).samples
           if s.split == "val"]
    ds = make_dataset(val, trained_run.classes, meta["image_size"], 8, resize=meta["resize"])
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing)
    model = trained_run.load_model()
    ys, ps = zip(*[(y, model(x, training=False)) for x, y in ds])
    assert float(loss(np.concatenate(ys), np.concatenate(ps))) == pytest.approx(
        float(best["val_loss"]), abs=2e-3)
