"""Model and training code are keras-only: the same `labtf train` runs on Keras' JAX backend."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("jax")
pytestmark = pytest.mark.slow  # trains a model in a JAX subprocess
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

    from labtf.images import load_rgb, to_square

    pred = KerasPredictor(out)
    files = [sorted((shared_data / c).glob("*.png"))[0] for c in sorted(os.listdir(shared_data))]
    x = np.stack([to_square(load_rgb(f), 64, "crop") for f in files]).astype(np.float32)
    probs = pred.predict_batch(x)
    assert probs.shape == (3, 3) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    # ... and gives the same numbers as the JAX backend that trained it
    np.save(tmp_path / "x.npy", x)
    code = ("import sys, numpy as np, keras\n"
            "import labtf.model  # registers the custom layers\n"
            "m = keras.saving.load_model(sys.argv[1], compile=False)\n"
            "np.save(sys.argv[3], np.asarray(m(np.load(sys.argv[2]), training=False)))\n")
    proc = subprocess.run([sys.executable, "-c", code, str(out / "model.keras"),
                           str(tmp_path / "x.npy"), str(tmp_path / "jax.npy")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jax_probs = np.load(tmp_path / "jax.npy")
    np.testing.assert_allclose(probs, jax_probs, atol=1e-4)
    # the comparison can tell classes apart: they differ by more than twice its tolerance
    assert np.abs(probs - probs[:, ::-1]).max() > 2e-4
