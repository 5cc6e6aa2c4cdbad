"""Batch-1 latency and ``labtf benchmark``: latency, throughput, size and accuracy of runs and
artifacts side by side (any :class:`labtf.predictor_base.Predictor`)."""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from labtf.predictor_base import Predictor


def measure_latency(predictor: Predictor, image: np.ndarray, runs: int = 30,
                    warmup: int = 3, with_cam: bool = True) -> float:
    """Median wall time (ms) of one batch-1 call on an already decoded image."""
    x = np.asarray(image, np.float32)[None]
    call = predictor.predict_batch_with_cam if with_cam and predictor.has_cam \
        else predictor.predict_batch
    for _ in range(warmup):
        call(x)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        call(x)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def _source_run(predictor: Predictor, artifact: str, run_path: str | None) -> str | None:
    if run_path:
        return run_path
    if hasattr(predictor, "run"):
        return str(predictor.run.path)
    src = getattr(predictor, "meta", {}).get("source_run")
    return src if src and Path(src).is_dir() else None


def benchmark_artifacts(artifacts: list[str], run_path: str | None = None, runs: int = 30,
                        batch_size: int = 16) -> str:
    """Latency (batch 1, median), throughput, size and test accuracy side by side.

    Args:
        artifacts: run folders and/or exported artifacts.
        run_path: run whose test split measures accuracy [each artifact's source run].
        runs: timed batch-1 calls per artifact.
        batch_size: batch for the throughput figure.

    Returns:
        A Markdown table.

    Raises:
        LabtfError: an artifact cannot be opened.
    """
    from exporters.common import load_images, size_bytes, split_samples
    from labtf.predict import open_predictor
    from labtf.run import Run

    cache: dict = {}
    rows = ["| artifact | latency ms (b=1) | throughput img/s (b=%d) | size MB | test accuracy |"
            % batch_size, "|---|---|---|---|---|"]
    for artifact in artifacts:
        pred = open_predictor(artifact)
        src = _source_run(pred, artifact, run_path)
        key = (src, pred.image_size, pred.resize)
        if key not in cache:
            if src:
                run = Run.open(src)
                images, kept = load_images(split_samples(run, "test"), pred.image_size, pred.resize)
                labels = np.array([pred.classes.index(s.label) for s in kept])
            else:
                rng = np.random.default_rng(0)
                images = rng.uniform(0, 255, (batch_size, pred.image_size, pred.image_size, 3))
                images, labels = images.astype(np.float32), None
            cache[key] = (images, labels)
        images, labels = cache[key]
        latency = measure_latency(pred, images[0], runs=runs, with_cam=False)
        batch = images[:batch_size]
        if len(batch) < batch_size:
            batch = np.concatenate([batch] * (batch_size // len(batch) + 1))[:batch_size]
        pred.predict_batch(batch)
        t = time.perf_counter()
        probs = pred.predict_batch(batch)
        throughput = len(batch) / (time.perf_counter() - t)
        acc = "-"
        if labels is not None:
            probs = np.concatenate([pred.predict_batch(images[i:i + batch_size])
                                    for i in range(0, len(images), batch_size)])
            acc = f"{(probs.argmax(1) == labels).mean():.2%}"
        path = Path(artifact)
        size = size_bytes(path / "model.keras" if (path / "model.keras").is_file() else path)
        rows.append(f"| {artifact} | {latency:.2f} | {throughput:.1f} | {size / 1e6:.2f} | {acc} |")
    return "\n".join(rows) + "\n"
