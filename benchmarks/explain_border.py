"""Where a letterboxed run's maps fall: share of map energy in the white letterbox border.

For each test image, the border is the part of the square input outside the
resized picture (``resize: pad``; found with labtf's own letterbox). Printed per class rank (1: the predicted
class, 2: the runner-up, N: the least likely): mean border area, mean share of
the map's energy in it, and how often the map's peak lies in it.

Usage: python benchmarks/explain_border.py RUN [--method gradcam]
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--method", default="gradcam")
    args = ap.parse_args()

    import numpy as np
    from PIL import Image

    from labtf.explain.core import Explainer
    from labtf.images import to_square
    from labtf.manifest import read_manifest
    from labtf.run import Run

    run = Run.open(args.run)
    ex = Explainer.from_run(run)
    if ex.resize != "pad":
        raise SystemExit(f"{args.run} was trained with resize={ex.resize}: no letterbox border")
    size = ex.image_size
    ranks = (1, 2, len(run.classes))
    rows = {r: [] for r in ranks}
    test = [s for s in read_manifest(run.file("split.csv"), validate=False).samples
            if s.split == "test"]
    for s in test:
        w, h = Image.open(s.path).size
        # the letterbox of a black picture of this size: white exactly where the border is
        border = to_square(np.zeros((h, w, 3), np.uint8), size, "pad").min(axis=-1) == 255
        if border.mean() < 0.05:
            continue
        x = ex.load(s.path)[None].astype(np.float32)
        order = np.argsort(ex.predict(x)[0])[::-1]
        for r in ranks:
            m = ex.maps(args.method, x, [int(order[r - 1])]).maps[0]
            total = float(m.sum())
            peak = np.unravel_index(int(m.argmax()), m.shape)
            rows[r].append((border.mean(), m[border].sum() / total if total > 0 else np.nan,
                            bool(total > 0 and border[peak])))
    print(f"{args.method} on {args.run}: {len(rows[1])} of {len(test)} test images have a border "
          f"of at least 5% of the input\n")
    print("| class rank | mean border area | mean map energy in border | peak in border |")
    print("|---|---:|---:|---:|")
    for r in ranks:
        a = np.array(rows[r], dtype=float)
        print(f"| {r} | {a[:, 0].mean():.3f} | {np.nanmean(a[:, 1]):.3f} | {a[:, 2].mean():.2f} |")


if __name__ == "__main__":
    from record import run_recorded  # benchmarks/record.py

    run_recorded(main)
