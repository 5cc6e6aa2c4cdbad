"""Data randomization test (Adebayo et al. 2018, sec. 3.2): retrain on shuffled labels.

A map that explains what the model learned must change when the model learned
nothing real: the same images with their training labels permuted, trained the
same way until it memorises them. The score is the mean Spearman rho between the
two models' maps of the same test images for the same class index; a method
passes when it is below :data:`labtf.explain.metrics.SANITY_RHO`.

The shuffled run is trained with the original run's config, except that the
training and validation images are pooled into one training set (a model that
fits random labels cannot be selected on random validation labels) and early
stopping is off; the test split keeps its true labels, so the shuffled run's
test accuracy shows it is at chance.
"""
from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import numpy as np

from labtf.errors import LabtfError

log = logging.getLogger(__name__)

MANIFEST = "shuffled_labels.csv"


def shuffled_manifest(run, path: str | os.PathLike, seed: int = 0) -> Path:
    """Write the run's split with the train and val labels permuted among themselves.

    Args:
        run: the original :class:`~labtf.run.Run`.
        path: manifest to write.
        seed: permutation seed.

    Returns:
        The manifest path (``path,label,split``; val images become train images).
    """
    from labtf.manifest import Sample, read_manifest, write_manifest

    samples = read_manifest(run.file("split.csv"), validate=False).samples
    fit = [s for s in samples if s.split in ("train", "val")]
    labels = [s.label for s in fit]
    random.Random(seed).shuffle(labels)
    kept = sum(a == s.label for a, s in zip(labels, fit))
    log.info("shuffled labels: %d training images, %d keep their own label by chance",
             len(fit), kept)
    out = [Sample(s.path, lab, "train") for s, lab in zip(fit, labels)]
    out += [s for s in samples if s.split == "test"]
    return write_manifest(path, out)


def label_randomized_run(run, out: str | os.PathLike, seed: int = 0):
    """The shuffled-label twin of ``run`` in ``out``: trained here unless already finished.

    Args:
        run: the original :class:`~labtf.run.Run`.
        out: folder of the twin run (an unfinished one there is resumed).
        seed: permutation seed.

    Returns:
        The finished twin :class:`~labtf.run.Run`.

    Raises:
        LabtfError: ``out`` holds a finished run that is not such a twin (e.g. the run itself).
    """
    from labtf.config import TrainConfig
    from labtf.run import Run
    from labtf.training import train

    out = Path(out)
    manifest = out.parent / f"{out.name}_{MANIFEST}"
    if (out / Run.MODEL).is_file():
        twin = Run.open(out)
        if Path(twin.config.data).resolve() != manifest.resolve() or twin.classes != run.classes:
            raise LabtfError(f"{out} is a finished run but not a shuffled-label twin made here; "
                             "pass a new folder for the shuffled-label run")
        return twin
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "config.json").is_file():
        shuffled_manifest(run, manifest, seed)
    cfg = {**run.config.to_dict(), "data": str(manifest), "split_file": None,
           "early_stopping_patience": 0}
    resume = (out / "config.json").is_file()
    log.info("training the shuffled-label run in %s (%s)", out, "resumed" if resume else "new")
    return train(TrainConfig.from_dict(cfg), out, resume=resume)


def label_randomization_rhos(twin, x: np.ndarray, targets: list[int],
                             original: dict[str, np.ndarray]) -> dict[str, list[float]]:
    """Spearman rho per image between the original run's maps and the twin's, per method.

    Args:
        twin: :class:`~labtf.explain.core.Explainer` of the shuffled-label run.
        x: float32 model inputs (N, S, S, 3), one batch.
        targets: class index per image (the original model's top class).
        original: method -> the original run's maps (N, S, S) of ``x`` for ``targets``
            (computed once by the faithfulness loop).

    Returns:
        method -> N rhos (a constant map counts as 0).
    """
    from labtf.explain.metrics import spearman

    return {m: [spearman(p, q) for p, q in zip(a, twin.maps(m, x, targets).maps, strict=True)]
            for m, a in original.items()}


def label_randomization_test(twin, x: np.ndarray, targets: list[int],
                             original: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean of :func:`label_randomization_rhos` per method."""
    rhos = label_randomization_rhos(twin, x, targets, original)
    return {m: float(np.mean(r)) for m, r in rhos.items()}
