"""Training data given as tfds:NAME, and the distribution / precision switches end to end."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import COLOURS, draw

tfds = pytest.importorskip("tensorflow_datasets")

ROOT = Path(__file__).resolve().parent.parent


def test_tfds_dataset_by_name(tmp_path, monkeypatch):
    """A locally prepared TFDS dataset (lab_apparatus from a manual dir) trains by name."""
    from labtf.lab_apparatus import LAB_APPARATUS_CLASSES
    from labtf.sources import load_index

    manual = tmp_path / "manual"
    rng = np.random.default_rng(0)
    for cls, colour in zip(LAB_APPARATUS_CLASSES[:3], COLOURS):
        (manual / cls).mkdir(parents=True)
        for i in range(11):
            draw(colour, rng, 40).save(manual / cls / f"{i}.png")
    data_dir = tmp_path / "tfds"
    builder = tfds.builder("lab_apparatus", data_dir=str(data_dir))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(manual), try_download_gcs=False))
    monkeypatch.setenv("TFDS_DATA_DIR", str(data_dir))
    monkeypatch.setenv("LABTF_CACHE", str(tmp_path / "cache"))
    index = load_index("tfds:lab_apparatus")
    assert len(index.samples) == 33
    assert {s.split for s in index.samples} == {"train", "test"}
    assert set(index.counts()) == set(LAB_APPARATUS_CLASSES[:3])  # classes with images
    assert index.counts()[LAB_APPARATUS_CLASSES[0]] == 11


def test_tfds_unprepared_is_one_line(tmp_path, monkeypatch):
    from labtf.errors import LabtfError
    from labtf.sources import load_index

    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("LABTF_CACHE", str(tmp_path / "cache"))
    with pytest.raises(LabtfError, match="not prepared"):
        load_index("tfds:lab_apparatus")


@pytest.mark.slow  # two training subprocesses
@pytest.mark.parametrize("extra,expect", [
    (["--strategy", "cpu2"], "strategy cpu2: 2 replica(s)"),
    (["--mixed-precision", "mixed_bfloat16"], "run saved"),
])
def test_strategy_and_precision_train(shared_data, tmp_path, extra, expect):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "train", str(shared_data), "--weights", "none",
         "--image-size", "64", "--batch-size", "8", "--epochs", "1", "--fine-tune-epochs", "1",
         "--fine-tune-blocks", "1", "--split-file", str(tmp_path / "split.csv"),
         "--out", str(out), *extra],
        capture_output=True, text=True, timeout=600, env={**os.environ, "LABTF_CACHE": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert expect in proc.stderr + proc.stdout
    config = json.loads((out / "config.json").read_text())
    assert config[extra[0][2:].replace("-", "_")] == extra[1]
    import keras

    from labtf.model import LOGITS

    model = keras.saving.load_model(out / "model.keras", compile=False)
    conv = model.get_layer("top_conv")
    if extra[1] == "mixed_bfloat16":  # backbone in bfloat16, class layer kept in float32
        assert conv.compute_dtype == "bfloat16" and conv.variable_dtype == "float32"
    else:
        assert conv.compute_dtype == "float32"
    assert model.get_layer(LOGITS).compute_dtype == "float32"
    probs = np.asarray(model(np.full((2, 64, 64, 3), 128, np.float32)))
    assert probs.dtype == np.float32 and np.allclose(probs.sum(1), 1, atol=1e-3)
    n_train = json.loads((out / "run.json").read_text())["n_train"]
    steps = -(-n_train // (16 if extra[1] == "cpu2" else 8))  # 2 replicas x 8: 16 per step
    assert f"\n{steps}/{steps} - " in "\n" + proc.stdout + proc.stderr, proc.stdout[-2000:]
