"""Parity of an exported artifact with the Keras run it came from.

Per artifact: ``max_abs_diff`` of probabilities vs Keras, ``top1_agreement``,
``accuracy`` (and Keras'), ``cam_pearson_r`` (mean and min over images of the
artifact's on-device CAM vs a Keras GradientTape Grad-CAM of Keras' top
class), ``size_bytes`` and batch-1 ``latency_ms`` (median). Results collect in
``<out>/parity.json`` and ``<out>/parity.md`` beside the artifacts.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exporters.common import load_images, size_bytes, split_samples
from labtf.run import write_json, write_text

log = logging.getLogger(__name__)


@dataclass
class Reference:
    """Keras outputs on one split of the run, computed once for many artifacts."""

    run_path: str
    images: np.ndarray
    labels: np.ndarray
    probs: np.ndarray
    grad_cam: np.ndarray
    keras_latency_ms: float


def reference(run, split: str = "test", limit: int | None = None,
              latency_runs: int = 20) -> Reference:
    """Decode ``split`` the Python way and run Keras (probabilities, Grad-CAM, latency).

    Raises:
        LabtfError: the split is missing or unreadable.
    """
    from exporters.benchmark import measure_latency
    from labtf.cam_head import grad_cam
    from labtf.predict import KerasPredictor

    meta = run.meta
    images, kept = load_images(split_samples(run, split, limit), int(meta["image_size"]),
                               meta.get("resize", "crop"))
    index = {c: i for i, c in enumerate(run.classes)}
    labels = np.array([index[s.label] for s in kept])
    keras_pred = KerasPredictor(run.path)
    probs = np.concatenate([keras_pred.predict_batch_with_cam(images[i:i + 16])[0]
                            for i in range(0, len(images), 16)])
    cams = grad_cam(keras_pred.model, images, meta.get("cam_layer"))
    latency = measure_latency(keras_pred, images[0], runs=latency_runs)
    return Reference(str(run.path), images, labels, probs, cams, latency)


def _cam_r(a: np.ndarray, b: np.ndarray) -> list[float]:
    from labtf.maps import pearson_r

    rs = [pearson_r(x, y) for x, y in zip(a, b)]
    return [r for r in rs if not math.isnan(r)]


def parity_report(artifact: str | Path, ref: Reference, latency_runs: int = 30,
                  batch_size: int = 16) -> dict:
    """Compare one artifact with the Keras reference.

    Returns:
        A JSON-able dict of the figures named in the module docstring.

    Raises:
        LabtfError: the artifact cannot be opened.
    """
    from exporters.benchmark import measure_latency
    from labtf.predict import open_predictor

    pred = open_predictor(artifact)
    probs, cams = [], []
    for i in range(0, len(ref.images), batch_size):
        if pred.has_cam:
            p, c = pred.predict_batch_with_cam(ref.images[i:i + batch_size])
            cams.append(c)
        else:
            p = pred.predict_batch(ref.images[i:i + batch_size])
        probs.append(p)
    probs = np.concatenate(probs)
    top = probs.argmax(1)
    keras_top = ref.probs.argmax(1)
    rs = _cam_r(np.concatenate(cams), ref.grad_cam) if cams else []
    meta = getattr(pred, "meta", {})
    return {
        "artifact": Path(artifact).name if Path(artifact).is_file() else str(artifact),
        "format": meta.get("format", "keras"), "quantize": meta.get("quantize", "none"),
        "n": int(len(ref.images)),
        "max_abs_diff": float(np.abs(probs - ref.probs).max()),
        "top1_agreement": float((top == keras_top).mean()),
        "accuracy": float((top == ref.labels).mean()),
        "keras_accuracy": float((keras_top == ref.labels).mean()),
        "cam_pearson_r": float(np.mean(rs)) if rs else None,
        "cam_pearson_r_min": float(np.min(rs)) if rs else None,
        "size_bytes": size_bytes(Path(artifact)),
        "latency_ms": measure_latency(pred, ref.images[0], runs=latency_runs),
        "keras_latency_ms": ref.keras_latency_ms,
    }


COLUMNS = [("artifact", "artifact", "{}"), ("quantize", "quantize", "{}"),
           ("max_abs_diff", "max abs dp", "{:.2e}"), ("top1_agreement", "top-1 agree", "{:.2%}"),
           ("accuracy", "accuracy", "{:.2%}"), ("keras_accuracy", "Keras acc.", "{:.2%}"),
           ("cam_pearson_r", "CAM r (mean)", "{:.4f}"), ("cam_pearson_r_min", "CAM r (min)", "{:.4f}"),
           ("size_bytes", "size MB", "{:.2f}"), ("latency_ms", "latency ms (b=1)", "{:.2f}")]


def markdown_table(reports: list[dict]) -> str:
    """The reports as one Markdown table."""
    lines = ["| " + " | ".join(h for _, h, _ in COLUMNS) + " |",
             "|" + "---|" * len(COLUMNS)]
    for r in reports:
        cells = []
        for key, _, fmt in COLUMNS:
            v = r.get(key)
            if v is None:
                cells.append("-")
            elif key == "size_bytes":
                cells.append(fmt.format(v / 1e6))
            else:
                cells.append(fmt.format(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_parity(out: str | Path, report: dict) -> Path:
    """Merge ``report`` into ``<out>/parity.json`` and rewrite ``<out>/parity.md``.

    Returns:
        The parity.json path.
    """
    out = Path(out)
    path = out / "parity.json"
    data = {"reports": {}}
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except ValueError:
            log.warning("%s is not valid JSON; starting a new one", path)
    data.setdefault("reports", {})[report["artifact"]] = report
    write_json(path, data)
    reports = list(data["reports"].values())
    keras_ms = reports[-1].get("keras_latency_ms")
    note = (f"\nKeras (model.keras) batch-1 latency on this machine: {keras_ms:.2f} ms.\n"
            if keras_ms else "")
    write_text(out / "parity.md", "# Export parity vs Keras\n\n" + markdown_table(reports) + note)
    return path
