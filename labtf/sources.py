"""Where training data comes from: a class-per-folder directory, a CSV manifest,
or a locally prepared TFDS dataset (``tfds:NAME``). All end as a split
:class:`~labtf.manifest.DatasetIndex`.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from labtf.errors import LabtfError
from labtf.manifest import (DatasetIndex, Sample, apply_split, default_split_file, read_manifest,
                            scan_folder, write_manifest)

log = logging.getLogger(__name__)

TFDS_PREFIX = "tfds:"
_TFDS_SPLITS = {"train": "train", "validation": "val", "val": "val", "test": "test"}


def _cache_root() -> Path:
    return Path(os.environ.get("LABTF_CACHE", Path.home() / ".cache")) / "labtf"


def tfds_to_folder(name: str, data_dir: str | None = None, out: Path | None = None) -> Path:
    """Write a locally prepared TFDS dataset as PNG files plus a manifest (once).

    Args:
        name: TFDS name, e.g. ``lab_apparatus`` or ``mnist:3.0.1``.
        data_dir: TFDS data dir (TFDS' default when ``None``).
        out: target folder (default: the labtf cache).

    Returns:
        Path of the manifest CSV (path,label,split from the TFDS splits).

    Raises:
        LabtfError: the dataset is not prepared locally or has no image/label features.
    """
    import numpy as np
    import tensorflow_datasets as tfds
    from PIL import Image

    import labtf.lab_apparatus  # noqa: F401  registers the builder

    data_dir = data_dir or os.environ.get("TFDS_DATA_DIR") or None
    out = out or _cache_root() / "tfds" / name.replace(":", "-").replace("/", "_")
    manifest = out / "manifest.csv"
    if manifest.is_file():
        return manifest
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as exc:
        raise LabtfError(f"TFDS dataset '{name}' is unknown ({exc.__class__.__name__})") from None
    if not builder.is_prepared():
        raise LabtfError(f"TFDS dataset '{name}' is not prepared in {builder.data_dir}; run "
                         f"tfds.builder('{name}').download_and_prepare() first")
    feats = builder.info.features
    if "image" not in feats or "label" not in feats:
        raise LabtfError(f"TFDS dataset '{name}' needs 'image' and 'label' features")
    names = feats["label"].names
    samples = []
    for split in builder.info.splits:
        ours = _TFDS_SPLITS.get(split, "train")
        for i, ex in enumerate(tfds.as_numpy(builder.as_dataset(split=split))):
            label = names[int(ex["label"])]
            path = out / split / label / f"{i:07d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            img = ex["image"]
            Image.fromarray(img[..., 0] if img.shape[-1] == 1 else np.asarray(img)).save(path)
            samples.append(Sample(str(path), label, ours))
    log.info("exported %d images of tfds:%s to %s", len(samples), name, out)
    return write_manifest(manifest, samples)


def load_index(data: str, seed: int = 0, test_fraction: float = 0.18, val_fraction: float = 0.1,
               split_file: str | None = None, validate: bool = True) -> DatasetIndex:
    """Index and split a dataset given as folder, CSV manifest or ``tfds:NAME``.

    Raises:
        LabtfError: missing data, unreadable manifest, too few classes.
    """
    if data.startswith(TFDS_PREFIX):
        data = str(tfds_to_folder(data[len(TFDS_PREFIX):]))
    path = Path(data)
    if path.suffix.lower() == ".csv":
        index = read_manifest(path, validate=validate)
        root = path.parent
    else:
        index = scan_folder(path, validate=validate)
        root = path
    if all(s.split for s in index.samples):
        return index
    target = Path(split_file) if split_file else \
        default_split_file(root, seed, test_fraction, val_fraction)
    return apply_split(index, target, test_fraction, val_fraction, seed, _check_leaks)


def _check_leaks(samples: list[Sample]) -> None:
    from labtf.curate.split import warn_straddling

    warn_straddling(samples)
