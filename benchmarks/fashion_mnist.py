"""Fashion-MNIST through labtf: Debian's dataset-fashion-mnist, official 60k/10k split.

Writes the IDX files as PNG class folders plus a manifest (path,label,split with
the official train/test split), trains with ``labtf train`` settings given on
the command line, evaluates on the 10k test images, and prints the accuracy
next to published baselines from the Fashion-MNIST README/benchmark.

Usage:
  sudo apt-get install dataset-fashion-mnist
  python benchmarks/fashion_mnist.py --out runs/fmnist [--train-limit N] [--epochs 2 ...]
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import time
from pathlib import Path

import numpy as np

from record import Recorder  # benchmarks/record.py (this script's folder is on sys.path)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SRC = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["t-shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
           "bag", "ankle_boot"]
#: Published test accuracies (Fashion-MNIST README benchmark table / baselines).
PUBLISHED = [("MobileNet (README, 'Benchmark' table)", 0.950),
             ("ResNet18 + normalization + random crop + flip (README)", 0.949),
             ("2 conv + pooling + BN (README)", 0.934),
             ("SVC C=10 (sklearn benchmark, README)", 0.897)]


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path) as fh:
        data = fh.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def export(folder: Path, train_limit: int | None) -> Path:
    """PNG files + manifest.csv (written once; reused when present)."""
    from PIL import Image

    from labtf.manifest import Sample, write_manifest

    manifest = folder / "manifest.csv"
    if manifest.is_file():
        return manifest
    samples = []
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x = read_idx(SRC / f"{prefix}-images-idx3-ubyte.gz")
        y = read_idx(SRC / f"{prefix}-labels-idx1-ubyte.gz")
        n = len(x) if split == "test" or not train_limit else min(train_limit, len(x))
        for i in range(n):
            p = folder / split / CLASSES[y[i]] / f"{i:05d}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(x[i], "L").save(p)
            samples.append(Sample(str(p), CLASSES[y[i]], split))
    return write_manifest(manifest, samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/fashion_mnist")
    ap.add_argument("--images", default=None, help="PNG export folder [OUT-images].")
    ap.add_argument("--train-limit", type=int, default=None, help="Use the first N training images.")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--fine-tune-epochs", type=int, default=1)
    ap.add_argument("--fine-tune-blocks", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    rec = Recorder()

    from labtf.config import TrainConfig
    from labtf.evaluation import evaluate
    from labtf.training import train

    t0 = time.time()
    manifest = export(Path(args.images or f"{args.out}-images"), args.train_limit)
    t1 = time.time()
    cfg = TrainConfig(data=str(manifest), backbone=args.backbone, image_size=args.image_size,
                      epochs=args.epochs, fine_tune_epochs=args.fine_tune_epochs,
                      fine_tune_blocks=args.fine_tune_blocks, batch_size=args.batch_size,
                      early_stopping_patience=0, cache=True)
    run = train(cfg, args.out, resume=(Path(args.out) / "config.json").is_file())
    t2 = time.time()
    m = evaluate(run)
    budget = (f"{run.meta['n_train']} training images, {args.backbone} ImageNet-pretrained at "
              f"{args.image_size} px, {args.epochs} head + {args.fine_tune_epochs} fine-tune "
              f"epochs, batch {args.batch_size}, {os.cpu_count()} CPU cores, model.fit "
              f"{run.meta.get('fit_seconds', t2 - t1) / 60:.1f} min (PNG export {t1 - t0:.0f} s)")
    lines = [f"Budget: {budget}.", "", "| model | test accuracy (10k official test set) |",
             "|---|---|", f"| **labtf {args.backbone}** | **{100 * m['accuracy']:.2f}%** |"]
    lines += [f"| {name} | {100 * acc:.1f}% |" for name, acc in PUBLISHED]
    text = "\n".join(lines)
    print(text)
    rec.write(Path(args.out, "fashion_mnist.md"), text)
    print(json.dumps({"accuracy": m["accuracy"], "n_test": m["n_test"]}))


if __name__ == "__main__":
    main()
