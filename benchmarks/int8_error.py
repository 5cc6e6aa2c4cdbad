"""Where the full-integer TF-Lite model departs from Keras, and which images it flips.

    python benchmarks/int8_error.py RUN [--calibration 100] [--rounding adaptive|nearest]
                                        [--record FILE]

For each split of the run: top-1 agreement, accuracy (int8 vs Keras), mean |dp|, and every
flipped image with the Keras top-2 margin (a flip of a near-tie says little about the export).
Then where the error comes from, on the test images: the int8 model's own GAP features and
logits (read back with ``experimental_preserve_all_tensors``) against Keras', the Dense layer's
own error on the int8 features, the input normalisation alone (Keras fed the pixels the int8
SUB/MUL would produce), a weights-only (dynamic-range) int8 model, and (adaptive rounding)
the float model carrying the rounded int8 weights.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporters.common import load_images, split_samples  # noqa: E402
from exporters.tflite import ROUNDING, convert, int8_model, saved_model_converter  # noqa: E402
from labtf.cam_head import build_export_model  # noqa: E402
from labtf.model import GAP, LOGITS  # noqa: E402
from labtf.run import Run  # noqa: E402
from record import Recorder  # noqa: E402  (benchmarks/record.py)


def interpreter(flat: bytes, keep: bool = False):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=flat, experimental_preserve_all_tensors=keep)
    it.allocate_tensors()
    return it


def probabilities(flat: bytes, images: np.ndarray) -> np.ndarray:
    run = interpreter(flat).get_signature_runner("serving_default")
    return np.stack([run(image=x[None].astype(np.float32))["probabilities"][0] for x in images])


def dynamic_range(export_model, size: int) -> bytes:
    """Weights-only int8 (activations float): separates weight from activation error."""
    import tensorflow as tf

    tmp, conv = saved_model_converter(export_model, size)
    try:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        return conv.convert()
    finally:
        tmp.cleanup()


def internals(flat: bytes, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dequantized GAP features and logits of the int8 model (the FULLY_CONNECTED op's in/out)."""
    it = interpreter(flat, keep=True)
    details = {t["index"]: t for t in it.get_tensor_details()}
    fc = next(o for o in it._get_ops_details() if o["op_name"] == "FULLY_CONNECTED")

    def deq(i: int) -> np.ndarray:
        scale, zero = details[i]["quantization"]
        a = it.get_tensor(i).astype(np.float64)
        return (a - zero) * scale if scale else a

    inp = it.get_input_details()[0]["index"]
    feats, logits = [], []
    for x in images:
        it.set_tensor(inp, x[None].astype(np.float32))
        it.invoke()
        feats.append(deq(fc["inputs"][0])[0])
        logits.append(deq(fc["outputs"][0])[0])
    return np.stack(feats), np.stack(logits)


def main() -> None:
    import keras

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--calibration", type=int, default=100, help="train images for calibration")
    ap.add_argument("--rounding", default="adaptive", choices=ROUNDING,
                    help="int8 weight rounding, as 'labtf export --int8-rounding'")
    ap.add_argument("--record", default=None, help="write the Markdown result here")
    a = ap.parse_args()
    rec = Recorder()
    run = Run.open(a.run)
    size, mode = int(run.meta["image_size"]), run.meta.get("resize", "crop")
    data = {s: load_images(split_samples(run, s), size, mode) for s in ("train", "val", "test")}
    model = run.load_model()
    calibration = data["train"][0][:a.calibration]
    rounded = int8_model(run, calibration, a.rounding, reference=model)
    export_model = build_export_model(rounded, run.meta.get("cam_layer"), normalize_cam=False)
    flat = convert(export_model, size, "int8", representative=calibration)
    lines = [f"# int8 TF-Lite error analysis: {run.path}", "",
             f"Command: `python benchmarks/int8_error.py {a.run} --calibration {a.calibration} "
             f"--rounding {a.rounding}`", "",
             "| split | images | top-1 agree | int8 acc. | Keras acc. | mean abs dp "
             "| flips (Keras top-2 margin) |",
             "|---|---:|---:|---:|---:|---:|---|"]
    keras_p = {}
    for split, (x, samples) in data.items():
        y = np.array([run.classes.index(s.label) for s in samples])
        pk = np.asarray(model.predict(x, verbose=0))
        keras_p[split] = pk
        pq = probabilities(flat, x)
        top = np.sort(pk, 1)
        flips = np.nonzero(pq.argmax(1) != pk.argmax(1))[0]
        desc = ", ".join(f"{Path(samples[i].path).name} ({top[i, -1] - top[i, -2]:.3f}, "
                         f"{'right' if pk[i].argmax() == y[i] else 'wrong'}->"
                         f"{'right' if pq[i].argmax() == y[i] else 'wrong'})" for i in flips) or "none"
        lines.append(f"| {split} | {len(x)} | {(pq.argmax(1) == pk.argmax(1)).mean():.2%} | "
                     f"{(pq.argmax(1) == y).mean():.2%} | {(pk.argmax(1) == y).mean():.2%} | "
                     f"{np.abs(pq - pk).mean():.4f} | {desc} |")
    x = data["test"][0]
    sub = keras.Model(model.input, [model.get_layer(GAP).output, model.get_layer(LOGITS).output])
    kf, kl = (np.asarray(v, np.float64) for v in sub.predict(x, verbose=0))
    qf, ql = internals(flat, x)
    w, b = model.get_layer(LOGITS).get_weights()
    # the int8 graph normalises with int8 SUB/MUL ops: Keras fed the pixels their rounding gives
    from labtf.backbones.registry import PREPROCESSING, get_backbone

    pre = PREPROCESSING[get_backbone(run.meta["backbone"]).preprocessing]
    mean, std = np.array(pre["mean"]), np.array(pre["std"])
    lo, hi = ((0 - mean) / std).min(), ((255 - mean) / std).max()
    step = (hi - lo) / 255
    xq = (np.round(((x - mean) / std - lo) / step) * step + lo) * std + mean
    pre_dp = np.abs(np.asarray(model.predict(xq, verbose=0)) - keras_p["test"]).mean()
    dyn_dp = np.abs(probabilities(dynamic_range(export_model, size), x) - keras_p["test"]).mean()
    lines += ["", "Where the test-split error comes from:", "",
              "| quantity | value |", "|---|---:|",
              f"| mean abs GAP feature, Keras | {np.abs(kf).mean():.4f} |",
              f"| mean abs GAP difference, int8 vs Keras | {np.abs(qf - kf).mean():.4f} |",
              f"| mean abs logit difference, int8 vs Keras | {np.abs(ql - kl).mean():.4f} |",
              f"| Dense layer's own error (int8 logits vs float Dense on the int8 features) | "
              f"{np.abs(ql - (qf @ w + b)).mean():.4f} |",
              f"| mean abs dp from the int8 input normalisation alone | {pre_dp:.5f} |",
              f"| mean abs dp, weights-only int8 (dynamic range) | {dyn_dp:.4f} |"]
    if a.rounding == "adaptive":
        rounded_dp = np.abs(np.asarray(rounded.predict(x, verbose=0)) - keras_p["test"]).mean()
        lines.append(f"| mean abs dp, float model carrying the adaptive-rounded int8 weights | "
                     f"{rounded_dp:.4f} |")
    lines.append(f"| mean abs dp, full int8 | "
                 f"{np.abs(probabilities(flat, x) - keras_p['test']).mean():.4f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.record:
        rec.write(a.record, text)


if __name__ == "__main__":
    main()
