"""benchmarks/gpu_train.py runs labtf's classifier on Keras' JAX backend with TensorFlow absent."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("jax")
ROOT = Path(__file__).resolve().parent.parent

# Runs the script with `import tensorflow` failing, as on a machine that has JAX only.
NO_TF = """
import runpy, sys
class NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ImportError("tensorflow is not installed on this machine")
sys.meta_path.insert(0, NoTensorFlow())
sys.argv = ["benchmarks/gpu_train.py", *sys.argv[1:]]
runpy.run_path("benchmarks/gpu_train.py", run_name="__main__")
print("tensorflow in sys.modules:", "tensorflow" in sys.modules)
"""


@pytest.mark.slow
def test_gpu_train_runs_on_jax_without_tensorflow(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    record = tmp_path / "gpu_train.md"
    proc = subprocess.run(
        [sys.executable, "-c", NO_TF, "--backbones", "efficientnet_lite0", "--batch", "2",
         "--size", "32", "--steps", "1", "--warmup", "2", "--record", str(record)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "on jax" in out and "mixed_bfloat16" in out
    line = next(x for x in out.splitlines() if x.startswith("efficientnet_lite0: train "))
    train, infer = (float(line.split(f"{k} ")[1].split(" img/s")[0].replace(",", ""))
                    for k in ("train", "inference"))
    assert train > 0 and infer > 0 and "outputs finite: True" in line
    assert "| efficientnet_lite0 | 3.4 M |" in out and "5,847 / 4,802" in out
    assert "tensorflow imported: False" in out and "tensorflow in sys.modules: False" in out
    text = record.read_text()
    assert "_Recorded" in text and "load average" in text and "| efficientnet_lite0 |" in text
