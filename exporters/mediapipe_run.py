"""Run a ``.tflite`` in MediaPipe Tasks' ImageClassifier, in a child process.

MediaPipe's process can hang after a failed graph, so :func:`classify` runs it as
``python -m exporters.mediapipe_run`` with a timeout and reads one JSON line back
(the child reports the error and leaves with ``os._exit``, skipping the teardown).
The images go in as ``uint8`` (N, S, S, 3) already squared by labtf
(:func:`labtf.images.to_square`): MediaPipe's own resize stretches the whole image
to the input size, labtf centre-crops or letterboxes, so feeding the squared image
compares the models, not the resizers.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from labtf.errors import LabtfError


@dataclass
class MediaPipeResult:
    """What MediaPipe returned for a batch of images."""

    loaded: bool
    error: str                       # first line of the failure when not loaded
    top: list[tuple[int, str, float]]   # per image: (index, category_name, score) of the top class
    heads: list[str]                 # head names of the first result
    latency_ms: list[float]          # per classify() call


def classify(model: str | Path, images: np.ndarray, *, timeout: float = 300.0) -> MediaPipeResult:
    """Classify ``images`` with MediaPipe's ImageClassifier in a subprocess.

    Args:
        model: the ``.tflite``.
        images: uint8 (N, H, W, 3) RGB.
        timeout: seconds before the child is killed.

    Returns:
        A :class:`MediaPipeResult` (``loaded`` False with the error when MediaPipe refused
        the model or the child timed out).

    Raises:
        LabtfError: mediapipe is not installed.
    """
    import importlib.util

    if importlib.util.find_spec("mediapipe") is None:
        raise LabtfError("MediaPipe checks need the 'mediapipe' package; pip install "
                         "'labtf[mediapipe]'")
    with tempfile.TemporaryDirectory(prefix="labtf_mp_") as tmp:
        batch = Path(tmp) / "images.npy"
        np.save(batch, np.asarray(images, np.uint8))
        try:
            proc = subprocess.run([sys.executable, "-m", "exporters.mediapipe_run", str(model),
                                   str(batch)], capture_output=True, text=True, timeout=timeout,
                                  cwd=str(Path(__file__).resolve().parent.parent))
        except subprocess.TimeoutExpired:
            return MediaPipeResult(False, f"timed out after {timeout:.0f} s", [], [], [])
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if lines and "error" in json.loads(lines[-1]):
        return MediaPipeResult(False, json.loads(lines[-1])["error"], [], [], [])
    if proc.returncode != 0 or not lines:
        err = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        hits = [ln for ln in err if "Error" in ln or "error" in ln]
        return MediaPipeResult(False, (hits or err or ["exit %d" % proc.returncode])[-1][:300],
                               [], [], [])
    out = json.loads(lines[-1])
    return MediaPipeResult(True, "", [tuple(t) for t in out["top"]], out["heads"],
                           out["latency_ms"])


def _child(model: str, batch: str) -> None:
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    images = np.load(batch)
    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=model),
                                            max_results=1)
    top, heads, times = [], [], []
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for img in images:
            image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(img))
            t = time.perf_counter()
            result = classifier.classify(image)
            times.append((time.perf_counter() - t) * 1000)
            heads = heads or [c.head_name for c in result.classifications]
            best = result.classifications[0].categories[0]
            top.append([int(best.index), best.category_name, float(best.score)])
    print(json.dumps({"top": top, "heads": heads, "latency_ms": times}), flush=True)


if __name__ == "__main__":
    import os

    try:
        _child(sys.argv[1], sys.argv[2])
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
        first = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        print(json.dumps({"error": first[:300]}), flush=True)
        os._exit(3)   # after a failed graph MediaPipe's teardown can hang: skip it
    os._exit(0)
