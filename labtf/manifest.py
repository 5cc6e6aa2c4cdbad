"""Datasets as manifests: scan class folders, split stratified, persist the split.

A manifest is a CSV with columns ``path,label,split`` (split is ``train``,
``val`` or ``test``; paths relative to the CSV's folder or absolute). The split
is written once and reused, so files never move between train and test when a
dataset grows: old files keep their side, new files are split among themselves.
"""
from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from labtf.errors import LabtfError
from labtf.fileio import write_text
from labtf.images import BadImage, is_image_name, load_rgb

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SPLIT_FILE = "labtf_split.csv"


@dataclass(frozen=True)
class Sample:
    """One labelled image."""

    path: str
    label: str
    split: str = ""


@dataclass
class DatasetIndex:
    """What a scan found: usable samples, class names, skipped files."""

    root: Path
    samples: list[Sample]
    classes: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def counts(self, split: str | None = None) -> dict[str, int]:
        """Images per class, optionally for one split."""
        c = Counter(s.label for s in self.samples if split is None or s.split == split)
        return {k: c.get(k, 0) for k in self.classes}

    def subset(self, split: str) -> list[Sample]:
        """Samples of one split, in manifest order."""
        return [s for s in self.samples if s.split == split]


def _check_images(items: list[tuple[str, str]], validate: bool) -> tuple[list[Sample], list]:
    good, skipped = [], []
    for path, label in items:
        if validate:
            try:
                load_rgb(path)
            except BadImage as exc:
                log.warning("skipping %s", exc)
                skipped.append((path, str(exc)))
                continue
        good.append(Sample(path, label))
    return good, skipped


def _finish(root: Path, samples: list[Sample], skipped: list, classes: list[str]) -> DatasetIndex:
    counts = Counter(s.label for s in samples)
    empty = [c for c in classes if counts[c] == 0]
    if empty:
        raise LabtfError(f"class folder '{empty[0]}' in {root} has no usable images; "
                         "add images or remove the folder")
    if len(classes) < 2:
        raise LabtfError(f"{root} has {len(classes)} class; a classifier needs at least 2 "
                         "class folders (one folder of images per class)")
    if skipped:
        log.warning("skipped %d unusable file(s) of %d in %s", len(skipped),
                    len(skipped) + len(samples), root)
    return DatasetIndex(root, samples, classes, skipped)


def scan_folder(root: str | os.PathLike, validate: bool = True) -> DatasetIndex:
    """Index a class-per-folder image directory.

    Args:
        root: folder with one sub-folder of images per class.
        validate: decode every image and skip (with a logged reason) unusable ones.

    Returns:
        The index; ``skipped`` lists (path, reason) of files left out.

    Raises:
        LabtfError: missing folder, no classes, one class, or an empty class.
    """
    root = Path(root)
    if not root.is_dir():
        raise LabtfError(f"dataset folder {root} does not exist; pass a folder with one "
                         "sub-folder of images per class")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    items, skipped = [], []
    for label in classes:
        for p in sorted((root / label).rglob("*")):
            if not p.is_file() or p.name.startswith("."):
                continue
            if is_image_name(p):
                items.append((str(p), label))
            else:
                skipped.append((str(p), f"{p}: not an image file name; ignored"))
    good, bad = _check_images(items, validate)
    return _finish(root, good, skipped + bad, classes)


def label_problem(label: str) -> str | None:
    """Why ``label`` cannot name a class (None when it can): empty, control characters, '/'."""
    if not label.strip():
        return "the label is empty"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in label):
        return f"the label {label!r} holds a control character"
    if "/" in label or "\\" in label or label.strip() in (".", ".."):
        return f"the label {label!r} is not a usable class name (it holds a path separator)"
    return None


def _manifest_rows(path: Path) -> list[tuple[int, dict]]:
    """(line, row) pairs of a manifest CSV; one-line errors for files that are not one."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:    # -sig: a BOM is fine
            reader = csv.DictReader(fh)
            missing = {"path", "label"} - {(f or "").strip() for f in reader.fieldnames or []}
            if missing:
                raise LabtfError(f"manifest {path} lacks column(s) {sorted(missing)}; "
                                 "expected a header path,label,split")
            reader.fieldnames = [(f or "").strip() for f in reader.fieldnames or []]
            rows = []
            for row in reader:
                rows.append((reader.line_num, row))
    except UnicodeDecodeError as exc:
        raise LabtfError(f"manifest {path} is not UTF-8 CSV text (byte {exc.start} cannot be "
                         "decoded); pass a CSV with the header path,label,split") from None
    except csv.Error as exc:
        raise LabtfError(f"manifest {path} is not a readable CSV ({exc}); pass a CSV with the "
                         "header path,label,split") from None
    except IsADirectoryError:
        raise LabtfError(f"manifest {path} is a folder; pass the CSV file") from None
    return rows


def read_manifest(path: str | os.PathLike, validate: bool = True) -> DatasetIndex:
    """Read a ``path,label[,split]`` CSV manifest (paths relative to the CSV).

    Every row is checked before any image is read: a short row, an empty or
    unusable label, an unknown split or an image listed twice is refused with
    its line number(s).

    Raises:
        LabtfError: missing or non-CSV file, missing columns, a bad row, duplicates.
    """
    path = Path(path)
    if not path.is_file():
        raise LabtfError(f"manifest {path} does not exist")
    items, splits, lines = [], {}, defaultdict(list)
    for i, row in _manifest_rows(path):
        fields = [k for k in row if k is not None]
        extra = [v for v in row.get(None) or [] if v.strip()]
        if extra or any(row.get(k) is None for k in ("path", "label")):
            n = sum(row[k] is not None for k in fields) + len(row.get(None) or [])
            raise LabtfError(f"manifest {path} line {i}: {n} value(s) for the {len(fields)} "
                             f"columns {','.join(fields)}; fix or remove the row")
        split = (row.get("split") or "").strip()
        if split and split not in SPLITS:
            raise LabtfError(f"manifest {path} line {i}: split '{split}' is not one of {list(SPLITS)}")
        label, raw = row["label"].strip(), row["path"].strip()
        problem = label_problem(label) or ("the path is empty" if not raw else None) or \
            ("the path holds a NUL byte" if "\x00" in raw else None)
        if problem:
            raise LabtfError(f"manifest {path} line {i}: {problem}; give every row an image "
                             "path and a class name")
        p = Path(raw)
        full = str(p if p.is_absolute() else path.parent / p)
        lines[os.path.normpath(os.path.abspath(full))].append((i, label, split))
        items.append((full, label))
        splits[full] = split
    dups = [v for v in lines.values() if len(v) > 1]
    if dups:
        where = "; ".join(", ".join(f"line {i} ({lab}{'/' + sp if sp else ''})" for i, lab, sp in d)
                          for d in dups[:3])
        raise LabtfError(f"manifest {path}: {sum(len(d) for d in dups)} rows list "
                         f"{len(dups)} image(s) more than once ({where}"
                         f"{'; ...' if len(dups) > 3 else ''}); keep one row per image")
    good, bad = _check_images(items, validate)
    good = [Sample(s.path, s.label, splits[s.path]) for s in good]
    classes = sorted({label for _, label in items})
    return _finish(path.parent, good, bad, classes)


def stratified_split(samples: list[Sample], *, test_fraction: float, val_fraction: float,
                     seed: int) -> list[Sample]:
    """Assign train/val/test per class, reproducibly for a seed.

    Every class with at least 2 images gets at least one test image.
    ``val_fraction`` is a fraction of the whole class, taken from training.
    """
    by_class: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_class[s.label].append(s)
    out = []
    for label in sorted(by_class):
        group = sorted(by_class[label], key=lambda s: s.path)
        random.Random(f"{seed}:{label}").shuffle(group)
        n = len(group)
        n_test = max(1, round(n * test_fraction)) if n >= 2 and test_fraction > 0 else 0
        n_val = max(1, round(n * val_fraction)) if n - n_test >= 2 and val_fraction > 0 else 0
        for i, s in enumerate(group):
            split = "test" if i < n_test else "val" if i < n_test + n_val else "train"
            out.append(Sample(s.path, s.label, split))
    return out


def write_manifest(path: str | os.PathLike, samples: list[Sample]) -> Path:
    """Write a manifest atomically; paths are stored relative to its folder when possible."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.parent.resolve()
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "label", "split"])
    for s in sorted(samples, key=lambda s: (s.split, s.label, s.path)):
        p = Path(s.path).resolve()
        rel = os.path.relpath(p, base) if p.is_relative_to(base) else str(p)
        w.writerow([Path(rel).as_posix(), s.label, s.split])
    write_text(path, buf.getvalue())
    return path


def default_split_file(root: Path, seed: int, test_fraction: float, val_fraction: float) -> Path:
    """Where a folder's split manifest lives: in the folder when writable, else in the cache."""
    name = SPLIT_FILE if (seed, test_fraction, val_fraction) == (0, 0.18, 0.1) else \
        f"labtf_split_s{seed}_t{test_fraction:g}_v{val_fraction:g}.csv"
    if os.access(root, os.W_OK):
        return root / name
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("LABTF_CACHE", Path.home() / ".cache")) / "labtf" / "splits"
    return cache / f"{key}-{name}"


def apply_split(index: DatasetIndex, split_file: Path, test_fraction: float,
                val_fraction: float, seed: int,
                on_new_split: Callable[[list[Sample]], None] | None = None) -> DatasetIndex:
    """Give every sample a split, reusing ``split_file`` when it exists.

    Files already in the split file keep their side; new files are split among
    themselves (stratified); files gone from disk drop out. The file is
    rewritten (atomically) only when something changed. ``on_new_split`` is
    called with all samples when some got a side just now.

    Returns:
        A new index whose samples all carry a split.
    """
    known: dict[str, str] = {}
    if split_file.is_file():
        for s in read_manifest(split_file, validate=False).samples:
            known[str(Path(s.path).resolve())] = s.split
    preset = [s for s in index.samples if s.split]
    keep = [Sample(s.path, s.label, known[str(Path(s.path).resolve())]) for s in index.samples
            if not s.split and str(Path(s.path).resolve()) in known]
    new = [s for s in index.samples if not s.split and str(Path(s.path).resolve()) not in known]
    fresh = stratified_split(new, test_fraction=test_fraction, val_fraction=val_fraction,
                             seed=seed) if new else []
    samples = preset + keep + fresh
    if fresh or len(keep) != len(known):
        write_manifest(split_file, keep + fresh)
        log.info("split manifest %s: %d kept, %d new", split_file, len(keep), len(fresh))
    if fresh and on_new_split is not None:
        on_new_split(samples)
    if not any(s.split == "train" for s in samples):
        raise LabtfError(f"no training images after the split of {index.root}; "
                         "add images or lower the test fraction")
    return DatasetIndex(index.root, samples, index.classes, index.skipped)
