"""labtf's own classifier on synthetic on-device data: train and inference img/s per backbone.

Runs on the Keras JAX backend without TensorFlow (an accelerator machine may
have JAX only). Each backbone is built the way ``labtf train`` builds it
(registry backbone + labtf's float32 head, ``labtf.model.build_classifier``),
compiled with labtf's own settings (``labtf.training._compile``: Adam,
label-smoothed cross-entropy, accuracy) under the ``mixed_bfloat16`` policy,
every layer trainable (as in the reference figures), and timed with Keras' own
jitted steps (``train_on_batch`` / ``predict_on_batch``) on one random batch
that stays on the device, after warm-up steps that compile them (use at least
2: Keras' JAX trainer compiles its train step again on the second call).
``keras.utils.set_random_seed`` is not called: it imports TensorFlow when present.

Reference (one H200, batch 128, 224 px, bf16, train img/s): EfficientNet-Lite0
bare Keras 3 on JAX 5,847, PyTorch/timm eager 4,802; ResNet-50 4,371 / 4,298.

Usage: KERAS_BACKEND=jax python benchmarks/gpu_train.py [--backbones efficientnet_lite0 ...]
       [--batch 128] [--size 224] [--steps 30] [--warmup 3] [--record benchmarks/results/gpu_train.md]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

#: train img/s on one H200 (batch 128, 224 px, bf16): (bare Keras 3 on JAX, PyTorch eager)
REFERENCE = {"efficientnet_lite0": (5847, 4802), "resnet50": (4371, 4298)}
BACKBONES = ("efficientnet_lite0", "mobilenet_v2_tv", "resnet50")


def measure(name: str, batch: int, size: int, steps: int, warmup: int, classes: int = 15) -> dict:
    """Train and inference img/s of labtf's classifier with backbone ``name``."""
    import jax
    import numpy as np

    from labtf.backbones import get_backbone
    from labtf.model import build_classifier
    from labtf.training import _compile

    model = build_classifier(get_backbone(name), classes, size, weights=None)
    _compile(model, 1e-4, 0.1)
    rng = np.random.default_rng(0)
    device = jax.devices()[0]
    x = jax.device_put(rng.uniform(0, 255, (batch, size, size, 3)).astype("float32"), device)
    y = jax.device_put(np.eye(classes, dtype="float32")[rng.integers(0, classes, batch)], device)
    result = {"backbone": name, "params": model.count_params()}
    for kind, step in (("train", lambda: model.train_on_batch(x, y)),
                       ("infer", lambda: model.predict_on_batch(x))):
        t = time.perf_counter()
        for _ in range(warmup):
            step()
        result[f"{kind}_compile_s"] = time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(steps):
            out = step()  # returns host values: each step has finished
        result[f"{kind}_img_s"] = steps * batch / (time.perf_counter() - t)
    result["finite"] = bool(np.all(np.isfinite(out)))
    return result


def table(rows: list[dict]) -> str:
    """Markdown table of the figures beside the H200 reference."""
    lines = ["| backbone | params | train img/s | inference img/s | reference train img/s "
             "(Keras/JAX, PyTorch; H200 b128 224 px) | vs bare Keras |", "|---|---|---|---|---|---|"]
    for r in rows:
        ref = REFERENCE.get(r["backbone"])
        vs = f"{r['train_img_s'] / ref[0]:.3f}x" if ref else "-"
        lines.append(f"| {r['backbone']} | {r['params'] / 1e6:.1f} M | {r['train_img_s']:,.1f} | "
                     f"{r['infer_img_s']:,.1f} | {f'{ref[0]:,} / {ref[1]:,}' if ref else '-'} | {vs} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", nargs="+", default=list(BACKBONES))
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--precision", default="mixed_bfloat16")
    ap.add_argument("--record", default=None, help="Write the table to this Markdown file.")
    args = ap.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from record import Recorder

    rec = Recorder()   # provenance of the results file: command, commit, machine, load

    import jax
    import keras

    from labtf.model import set_precision

    set_precision(args.precision)
    dev = jax.devices()[0]
    where = f"{dev.platform} {getattr(dev, 'device_kind', '')}".strip()
    print(f"Keras {keras.__version__} on {keras.backend.backend()} (jax {jax.__version__}), "
          f"device {where}, batch {args.batch}, {args.size} px, {args.precision}, "
          f"{args.steps} timed steps after {args.warmup} warm-up")
    rows = []
    for name in args.backbones:
        r = measure(name, args.batch, args.size, args.steps, args.warmup)
        rows.append(r)
        print(f"{name}: train {r['train_img_s']:,.1f} img/s, inference {r['infer_img_s']:,.1f} img/s "
              f"(compile {r['train_compile_s']:.1f} s + {r['infer_compile_s']:.1f} s; "
              f"outputs finite: {r['finite']})", flush=True)
    text = table(rows)
    print(text)
    print(f"tensorflow imported: {'tensorflow' in sys.modules}")
    if args.record:
        rec.write(args.record, "# labtf's classifier, train and inference throughput\n\n"
                  f"Device: {where}.\n\n" + text)


if __name__ == "__main__":
    main()
