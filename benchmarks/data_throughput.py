"""tf.data throughput: decode + resize (+ augment) in images/s on this machine.

Usage: python benchmarks/data_throughput.py [DATA] [--size 224] [--epochs 3]
Epoch 1 decodes every file (Pillow) and fills the cache; later epochs read the
cache and augment. Prints one line per setting.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="?", default=str(Path(__file__).parent.parent / "datasets" / "clipart"))
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()

    from labtf.data import AugmentConfig, make_dataset
    from labtf.manifest import scan_folder

    idx = scan_folder(args.data)
    n = len(idx.samples)
    print(f"{n} images in {args.data}, {args.size} px, batch {args.batch_size}, {os.cpu_count()} CPUs")
    for label, kwargs in [("decode+resize (no cache)", {"cache": False}),
                          ("decode+resize+augment (cached)", {"cache": True, "training": True,
                                                              "augment_cfg": AugmentConfig()})]:
        ds = make_dataset(idx.samples, idx.classes, args.size, args.batch_size, **kwargs)
        for epoch in range(1, args.epochs + 1):
            t = time.perf_counter()
            count = sum(int(x.shape[0]) for x, _ in ds)
            dt = time.perf_counter() - t
            print(f"{label:34s} epoch {epoch}: {count / dt:8.1f} images/s ({count} in {dt:.2f} s)")


if __name__ == "__main__":
    from record import run_recorded  # benchmarks/record.py

    run_recorded(main)
