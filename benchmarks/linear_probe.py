"""Linear-probe baseline beside a fine-tuned run, on the run's own split.

Frozen ImageNet features (the run's backbone, global-average-pooled, no
augmentation) + scikit-learn logistic regression, trained on the run's train
(+val) split and scored on its test split; printed next to the run's
fine-tuned test accuracy from metrics.json.

Usage: python benchmarks/linear_probe.py RUN [--out benchmarks/results/linear_probe.md]
"""
from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--out", default=None, help="Also write the table as Markdown here.")
    args = ap.parse_args()

    import keras
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from labtf.backbones import get_backbone
    from labtf.evaluation import predict_samples
    from labtf.manifest import read_manifest
    from labtf.model import GAP, build_classifier
    from labtf.run import Run

    run = Run.open(args.run)
    meta, classes = run.meta, run.classes
    spec = get_backbone(meta["backbone"])
    full = build_classifier(spec, len(classes), meta["image_size"], weights="imagenet")
    features = keras.Model(full.input, full.get_layer(GAP).output)
    samples = read_manifest(run.file("split.csv"), validate=False).samples
    train = [s for s in samples if s.split in ("train", "val")]
    test = [s for s in samples if s.split == "test"]
    t = time.time()
    wrapped = type("F", (), {"predict": lambda self, ds, verbose=0: features.predict(ds, verbose=0)})()
    xtr = predict_samples(wrapped, train, classes, meta["image_size"])
    xte = predict_samples(wrapped, test, classes, meta["image_size"])
    ytr = np.array([classes.index(s.label) for s in train])
    yte = np.array([classes.index(s.label) for s in test])
    clf = LogisticRegression(max_iter=3000, C=1.0).fit(xtr, ytr)
    probe = float((clf.predict(xte) == yte).mean())
    tuned = json.loads(run.file("metrics.json").read_text())["accuracy"]
    rows = [("linear probe (frozen ImageNet features + logistic regression)", probe),
            (f"labtf fine-tuned ({meta['backbone']}, {run.config.epochs}+"
             f"{run.config.fine_tune_epochs} epochs)", tuned)]
    lines = [f"Split: {len(train)} train+val, {len(test)} test images, {len(classes)} classes "
             f"({run.file('split.csv')}); features in {time.time() - t:.1f} s.", "",
             "| model | test accuracy |", "|---|---|"]
    lines += [f"| {name} | {100 * acc:.2f}% |" for name, acc in rows]
    text = "\n".join(lines)
    print(text)
    if args.out:
        from pathlib import Path

        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
