"""Model and training code are keras-only: the same `labtf train` runs on Keras' JAX backend."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("jax")
ROOT = Path(__file__).resolve().parent.parent


def test_train_on_jax_and_load_on_tensorflow(shared_data, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "KERAS_BACKEND": "jax", "LABTF_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "train", str(shared_data), "--weights", "none",
         "--image-size", "64", "--batch-size", "8", "--epochs", "1", "--fine-tune-epochs", "1",
         "--fine-tune-blocks", "1", "--split-file", str(tmp_path / "split.csv"), "--out", str(out)],
        capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "run.json").read_text())["backend"] == "jax"
    # the saved model is backend-neutral: TensorFlow (this process) loads and runs it
    from labtf.predict import KerasPredictor

    pred = KerasPredictor(out)
    probs = pred.predict_batch(np.full((2, 64, 64, 3), 128, np.float32))
    assert probs.shape == (2, 3) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
