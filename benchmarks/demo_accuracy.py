"""The embedded default job over several seeds, each beside a linear-probe baseline.

Each seed trains the demo settings (EfficientNet-Lite0, offline ImageNet weights)
on its own stratified 82/18 split of datasets/clipart, evaluates on the test
split, and fits a logistic-regression probe on frozen features of the same split.
Seed 0 is the committed split (the demo's); other seeds are labtf's grouped
split of the same folders (``labtf curate`` + ``labtf split --seed N``), so no
near-duplicate group straddles train and test in any of them.

Usage: python benchmarks/demo_accuracy.py [--seeds 0 1 2] [--out runs/demo-bench]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).parent))


def grouped_manifest(seed: int, work: Path) -> Path:
    """labtf's grouped split of a copy of the embedded dataset for ``seed``; returns the manifest."""
    from labtf.curate.core import curate
    from labtf.curate.split import grouped_split
    from labtf.demo import embedded_dataset

    images = work / "images"
    if not (work / "curation").is_dir():
        shutil.rmtree(images, ignore_errors=True)
        for d in sorted(embedded_dataset().iterdir()):
            if d.is_dir():
                shutil.copytree(d, images / d.name)
        curate(work, review=False)
    return grouped_split(work, seed=seed, out=work / f"split_s{seed}.csv")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default="runs/demo-bench")
    ap.add_argument("--resize", default="pad")
    args = ap.parse_args()

    from linear_probe import probe

    from labtf.demo import run_demo

    rows = []
    for seed in args.seeds:
        out = Path(args.out) / f"seed{seed}-{args.resize}"
        t = time.time()
        if not (out / "metrics.json").is_file():
            data = {} if seed == 0 else {"data": str(grouped_manifest(seed, Path(args.out) / "work"))}
            run_demo(out, seed=seed, resize=args.resize, **data)
        r = probe(str(out))
        rows.append((seed, r, time.time() - t))
        print(f"seed {seed}: fine-tuned {100 * r['fine_tuned']:.2f}%  probe {100 * r['probe']:.2f}%",
              flush=True)
    print("\n| seed | test images | labtf fine-tuned | linear probe | wall s |\n|---|---|---|---|---|")
    for seed, r, dt in rows:
        print(f"| {seed} | {r['n_test']} | {100 * r['fine_tuned']:.2f}% | {100 * r['probe']:.2f}% "
              f"| {dt:.0f} |")
    mean = lambda k: 100 * sum(r[k] for _, r, _ in rows) / len(rows)  # noqa: E731
    print(f"| mean | | {mean('fine_tuned'):.2f}% | {mean('probe'):.2f}% | |")


if __name__ == "__main__":
    from record import run_recorded  # benchmarks/record.py

    run_recorded(main)
