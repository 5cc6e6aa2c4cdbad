"""Linear-probe baseline beside a fine-tuned run, on the run's own split.

Frozen ImageNet features (the run's backbone, global-average-pooled, no
augmentation) + scikit-learn logistic regression, trained on the run's train
(+val) split and scored on its test split; printed next to the run's
fine-tuned test accuracy from metrics.json.

Usage: python benchmarks/linear_probe.py RUN
"""
from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def probe(run_path: str) -> dict:
    """Fit and score the linear probe on a run's split; returns accuracies and counts."""
    import keras
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from labtf.backbones import get_backbone
    from labtf.data import make_dataset
    from labtf.manifest import read_manifest
    from labtf.model import GAP, build_classifier
    from labtf.run import Run

    run = Run.open(run_path)
    meta, classes = run.meta, run.classes
    spec = get_backbone(meta["backbone"])
    full = build_classifier(spec, len(classes), meta["image_size"], weights="imagenet")
    features = keras.Model(full.input, full.get_layer(GAP).output)
    samples = read_manifest(run.file("split.csv"), validate=False).samples
    t = time.time()

    def embed(subset):
        ds = make_dataset(subset, classes, meta["image_size"], 32, cache=False, one_hot=False,
                          resize=meta.get("resize", "crop"))
        x = np.concatenate([features.predict_on_batch(b) for b, _ in ds])
        return x, np.array([classes.index(s.label) for s in subset])

    xtr, ytr = embed([s for s in samples if s.split in ("train", "val")])
    xte, yte = embed([s for s in samples if s.split == "test"])
    clf = LogisticRegression(max_iter=3000).fit(xtr, ytr)
    return {"probe": float((clf.predict(xte) == yte).mean()),
            "fine_tuned": json.loads(run.file("metrics.json").read_text())["accuracy"],
            "n_train": len(ytr), "n_test": len(yte), "classes": len(classes),
            "seconds": round(time.time() - t, 1), "backbone": meta["backbone"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    args = ap.parse_args()
    r = probe(args.run)
    print(f"{r['n_train']} train+val / {r['n_test']} test images, {r['classes']} classes")
    print("| model | test accuracy |\n|---|---|")
    print(f"| linear probe (frozen {r['backbone']} ImageNet features + logistic regression) "
          f"| {100 * r['probe']:.2f}% |")
    print(f"| labtf fine-tuned | {100 * r['fine_tuned']:.2f}% |")


if __name__ == "__main__":
    main()
