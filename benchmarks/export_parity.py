"""Export a run to every format and print the parity table against Keras.

    python benchmarks/export_parity.py RUN --out DIR [--record benchmarks/results/export_parity.md]

Also exports the fp32 and int8 TF-Lite models without the CAM output, to
measure what the on-device CAM costs, and checks the issue's targets.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import platform
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporters import FORMATS, export  # noqa: E402
from exporters.parity import markdown_table, parity_report, reference, write_parity  # noqa: E402
from labtf.run import Run  # noqa: E402
from record import Recorder  # noqa: E402  (benchmarks/record.py)


def available(fmt: str) -> bool:
    spec = FORMATS[fmt]
    try:
        for mod in spec.requires + spec.runtime_requires:
            importlib.import_module(mod)
        return True
    except ImportError:
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--out", required=True, help="new folder for the artifacts")
    ap.add_argument("--runs", type=int, default=50, help="timed batch-1 calls")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved TF-Lite timing rounds")
    ap.add_argument("--record", default=None, help="write the Markdown result here")
    ap.add_argument("--formats", default=",".join(FORMATS),
                    help="comma-separated formats to export [%(default)s]")
    args = ap.parse_args()
    wanted = args.formats.split(",")
    unknown = sorted(set(wanted) - set(FORMATS))
    if unknown:
        ap.error(f"unknown format(s) {unknown}; choose from: {', '.join(FORMATS)}")
    rec = Recorder()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run = Run.open(args.run)
    out = Path(args.out)
    ref = reference(run, latency_runs=args.runs)
    reports, skipped = [], []
    for fmt, spec in FORMATS.items():
        if fmt not in wanted:
            continue
        for q in spec.quantize:
            if not available(fmt):
                skipped.append(f"{fmt}/{q}: '{spec.extra}' extra not installed")
                continue
            # a folder per format and quantisation: a web app is a whole folder
            report = parity_report(export(run.path, fmt, out / fmt / q, quantize=q), ref, args.runs)
            write_parity(out, report)
            reports.append(report)
    from exporters.tflite import artifact_name, export_tflite
    from exporters.benchmark import measure_latency
    from exporters.tflite import TFLitePredictor

    by = {(r["format"], r["quantize"]): r for r in reports}
    # The shared CPU is noisy: time the four TF-Lite models interleaved, in rounds, and keep
    # each model's best round median (replaces the single-shot figure in the table).
    timed = {}
    for q in ("none", "int8"):
        if ("tflite", q) in by:
            timed[q, True] = TFLitePredictor(out / "tflite" / q / artifact_name(q))
            timed[q, False] = TFLitePredictor(export_tflite(run, out / "nocam", quantize=q,
                                                            with_cam=False))
    best = {k: float("inf") for k in timed}
    for _ in range(args.rounds):
        for k, pred in timed.items():
            best[k] = min(best[k], measure_latency(pred, ref.images[0], runs=args.runs))
    nocam = {q: best[q, False] for q, cam in best if not cam}
    for (q, cam), ms in best.items():
        if cam:
            by["tflite", q]["latency_ms"] = ms
            write_parity(out, by["tflite", q])
    fp32, int8 = by.get(("tflite", "none")), by.get(("tflite", "int8"))
    checks = []
    for key in [("saved_model", "none"), ("tflite", "none"), ("onnx", "none")]:
        if key in by:
            checks.append((f"{key[0]} max abs dp <= 1e-4", by[key]["max_abs_diff"] <= 1e-4,
                           f"{by[key]['max_abs_diff']:.1e}"))
    if fp32 and int8:
        drop = 100 * (int8["keras_accuracy"] - int8["accuracy"])
        ratio = int8["latency_ms"] / fp32["latency_ms"]
        checks += [
            ("int8 top-1 agreement >= 98%", int8["top1_agreement"] >= 0.98,
             f"{int8['top1_agreement']:.2%}"),
            ("int8 accuracy drop <= 1 point", drop <= 1.0, f"{drop:.2f} points"),
            ("int8 size <= 6 MB", int8["size_bytes"] <= 6e6, f"{int8['size_bytes'] / 1e6:.2f} MB"),
            ("int8 latency <= 0.6x fp32 TF-Lite", ratio <= 0.6, f"{ratio:.2f}x"),
            ("fp32 TF-Lite CAM r >= 0.99", fp32["cam_pearson_r_min"] >= 0.99,
             f"min {fp32['cam_pearson_r_min']:.4f}, mean {fp32['cam_pearson_r']:.4f}"),
            ("int8 CAM r (reported)", True,
             f"min {int8['cam_pearson_r_min']:.4f}, mean {int8['cam_pearson_r']:.4f}"),
        ]
        for q, r in (("none", fp32), ("int8", int8)):
            extra = r["latency_ms"] / nocam[q] - 1
            checks.append((f"CAM adds <= 10% to TF-Lite {q} latency", extra <= 0.10,
                           f"{r['latency_ms']:.2f} vs {nocam[q]:.2f} ms no-CAM ({extra:+.1%})"))
    load = os.getloadavg()
    lines = ["| target | met | measured |", "|---|---|---|"]
    lines += [f"| {name} | {'yes' if ok else 'NO'} | {got} |" for name, ok, got in checks]
    text = (f"# Export parity: {run.meta.get('backbone')} {run.meta.get('image_size')} px, "
            f"{len(run.classes)} classes, {ref.images.shape[0]} test images\n\n"
            f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
            f"no GPU, load average {load[0]:.1f} / {load[1]:.1f} at the end (1 / 5 min; "
            f"{os.cpu_count()}: every core busy); latency = median of {args.runs} batch-1 calls "
            f"after warm-up (TF-Lite: best of {args.rounds} interleaved rounds); "
            f"Keras model.keras {ref.keras_latency_ms:.2f} ms.\n\n"
            + markdown_table(reports) + "\n" + "\n".join(lines) + "\n"
            + "".join(f"\nskipped: {s}" for s in skipped) + "\n")
    print(text)
    if args.record:
        rec.write(args.record, text)


if __name__ == "__main__":
    main()
