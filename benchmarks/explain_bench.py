"""Explanation methods on a real run: warm time per method for one image, and explain-eval.

Usage: python benchmarks/explain_bench.py RUN [--steps 16] [--limit N] [--sanity-images 6]
       [--out DIR]
Times every method of labtf.explain.METHODS on the first test image (median of
3 warm calls; one for the slow full Score-CAM), then runs the faithfulness evaluation on the run's test split
and prints both tables (Markdown); explain_eval.md/.json go to --out.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--sanity-images", type=int, default=6)
    ap.add_argument("--out", default=None, help="where explain_eval.md/.json go [RUN]")
    args = ap.parse_args()

    import numpy as np

    from labtf.explain.core import METHODS, Explainer
    from labtf.explain.faithfulness import explain_eval, table_markdown
    from labtf.manifest import read_manifest
    from labtf.run import Run

    run = Run.open(args.run)
    ex = Explainer.from_run(run)
    test = [s for s in read_manifest(run.file("split.csv"), validate=False).samples
            if s.split == "test"]
    img = ex.load(test[0].path)
    print(f"run {args.run}: {run.meta['backbone']} at {ex.image_size} px, layer {ex.layer}, "
          f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()})\n")
    print("| method | warm s / image (median of 3; full Score-CAM: 1 call) |\n|---|---|")
    for m in METHODS:
        ex.explain(img, m)
        times = []
        for _ in range(1 if m == "scorecam" else 3):
            t = time.perf_counter()
            ex.explain(img, m)
            times.append(time.perf_counter() - t)
        print(f"| {m} | {np.median(times):.3f} |", flush=True)
    t = time.perf_counter()
    result = explain_eval(args.run, steps=args.steps, limit=args.limit,
                          sanity_images=args.sanity_images, out=args.out)
    print(f"\nexplain-eval: {time.perf_counter() - t:.0f} s\n")
    print(table_markdown(result))


if __name__ == "__main__":
    from record import run_recorded  # benchmarks/record.py

    run_recorded(main)
