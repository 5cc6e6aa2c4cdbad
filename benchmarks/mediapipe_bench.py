"""labtf's .tflite in MediaPipe Tasks' ImageClassifier: loads? names? agreement? latency.

Exports a run to TF-Lite fp32, fp16 and int8 (uint8 I/O, which MediaPipe takes),
each as the CAM model and its classifier-only twin, then for every file: does
``mediapipe.tasks.python.vision.ImageClassifier`` load it, are its
``category_name`` values labtf's class names, how often does its top-1 agree with
``labtf predict`` (the CAM model of the same quantisation, on the run's test
split), and its median classify() latency beside ai-edge-litert's on the same
file. MediaPipe gets labtf's squared image (see :mod:`exporters.mediapipe_run`).

    python benchmarks/mediapipe_bench.py /work/runs/demo14 --out benchmarks/results/mediapipe.md
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

QUANT = {"fp32": ("none", "float32"), "fp16": ("float16", "float32"), "int8": ("int8", "uint8")}


def litert_latency(artifact: Path, images: np.ndarray, with_cam: bool) -> float:
    """Median ms of one batch-1 call through labtf's TFLitePredictor (ai-edge-litert)."""
    from exporters.tflite import TFLitePredictor

    pred = TFLitePredictor(artifact)
    call = pred.predict_batch_with_cam if with_cam else pred.predict_batch
    for img in images[:3]:
        call(img[None].astype(np.float32))
    times = []
    for img in images:
        t = time.perf_counter()
        call(img[None].astype(np.float32))
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a finished run folder (the demo run)")
    ap.add_argument("--exports", default=None, help="export folder [RUN_mediapipe]")
    ap.add_argument("--out", default=None, help="Markdown file to write (rewritten after each row)")
    ap.add_argument("--only", default=",".join(QUANT), help="quantisations, in order [fp32,fp16,int8]")
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from exporters import export
    from exporters.common import load_images, split_samples
    from exporters.mediapipe_run import classify
    from exporters.tflite import artifact_name
    from labtf.predict import open_predictor, predict_files
    from labtf.run import Run

    run = Run.open(args.run)
    exports = Path(args.exports or f"{Path(args.run).resolve()}_mediapipe")
    samples = split_samples(run, "test")
    meta = run.meta
    squared, kept = load_images(samples, int(meta["image_size"]), meta.get("resize", "crop"))
    squared = squared.astype(np.uint8)
    paths = [s.path for s in kept]
    truth = [s.label for s in kept]
    rows, t_start = [], time.time()
    tags = [t for t in args.only.split(",") if t]
    for tag in tags:
        quantize, io_type = QUANT[tag]
        cam_file = exports / artifact_name(quantize, True)
        for cam in (True, False):   # what an earlier (interrupted) call left is reused
            if not (exports / artifact_name(quantize, cam)).is_file():
                t = time.perf_counter()
                export(args.run, "tflite", exports, quantize=quantize, io_type=io_type,
                       with_cam=cam, classifier_twin=False)
                print(f"exported {artifact_name(quantize, cam)} in {time.perf_counter() - t:.0f} s",
                      flush=True)
        labtf_top = [r.top[0][0] for r in predict_files(open_predictor(cam_file), paths)]
        acc = np.mean([a == b for a, b in zip(labtf_top, truth)])
        for cam in (True, False):
            f = exports / artifact_name(quantize, cam)
            res = classify(f, squared, timeout=600)
            row = {"file": f.name, "kind": "CAM model" if cam else "classifier twin",
                   "tag": tag, "io": io_type, "mb": f.stat().st_size / 1e6,
                   "loaded": res.loaded, "error": res.error, "acc": acc,
                   "litert": litert_latency(f, squared, cam)}
            if res.loaded:
                # a CAM model loads, but MediaPipe reads the CAM as a head: indices past the classes
                row["names"] = all(i < len(run.classes) and run.classes[i] == n
                                   for i, n, _ in res.top)
                row["heads"] = ", ".join(res.heads)
                row["agree"] = np.mean([n == t for (_, n, _), t in zip(res.top, labtf_top)])
                row["mp"] = statistics.median(res.latency_ms[3:] or res.latency_ms)
            rows.append(row)
            print(row, flush=True)
            write(args, rows, run, meta, paths, t_start, 2 * len(tags))


def write(args, rows: list, run, meta: dict, paths: list, t_start: float, total: int) -> None:
    """Print the Markdown table and write it to ``--out`` (after every row)."""
    load = os.getloadavg()
    print(f"[{len(rows)}/{total} rows]", flush=True)
    text = ["# labtf .tflite in MediaPipe Tasks ImageClassifier\n",
            f"Command: `python benchmarks/mediapipe_bench.py {args.run} --only {args.only}"
            f"{' --out ' + args.out if args.out else ''}`\n",
            f"Date {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {os.cpu_count()}-core CPU "
            f"({platform.processor() or platform.machine()}); load average at the end "
            f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (shared machine); "
            f"{time.time() - t_start:.0f} s in all"
            f"{'' if len(rows) == total else f'; partial: {len(rows)} of {total} rows so far'}.\n",
            f"Run `{args.run}` ({meta.get('backbone')}, {meta.get('image_size')} px, "
            f"{len(run.classes)} classes), test split: {len(paths)} images. labtf predict = "
            "`labtf predict` on the CAM model of the same quantisation (Pillow decode, "
            f"{meta.get('resize', 'crop')} to square); MediaPipe gets the same squared uint8 image. "
            "Latency: median ms of one image, MediaPipe `classify()` (its own float "
            "conversion/normalisation included) vs labtf's ai-edge-litert predictor on the same "
            "file (batch 1, probabilities, plus the CAM for CAM models).\n",
            "| artifact | file | MB | loads in MediaPipe | names right | top-1 agreement with "
            "labtf predict | labtf predict test acc. | MediaPipe ms | ai-edge-litert ms |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ok = r["loaded"]
        cells = [f"{r['tag']} ({r['io']} io) {r['kind']}", f"`{r['file']}`", f"{r['mb']:.1f}",
                 f"yes (heads: {r['heads']})" if ok else f"no: {r['error']}",
                 ("yes" if r["names"] else "no") if ok else "-",
                 f"{100 * r['agree']:.1f}% ({round(r['agree'] * len(paths))}/{len(paths)})"
                 if ok else "-",
                 f"{100 * r['acc']:.1f}%", f"{r['mp']:.1f}" if ok else "-", f"{r['litert']:.1f}"]
        text.append("| " + " | ".join(cells) + " |")
    text.append("")
    out = "\n".join(text)
    if len(rows) == total:
        print(out)
    if args.out:
        Path(args.out).write_text(out)


if __name__ == "__main__":
    main()
