"""Grouped, stratified, seeded split: near-duplicate groups never straddle train and test.

Each near-duplicate group (``curation/groups.json``) is a unit; singletons are
units of one. Units are shuffled per class (a group counts for its majority
class) with a seed and taken for test, then val, until each class reaches its
share. Re-running keeps every file's earlier side (``WORK/split.csv``); a new
file joining a group takes the group's side. The manifest ``path,label,split``
is what ``labtf train WORK/split.csv`` reads.
"""
from __future__ import annotations

import json
import logging
import os
import random
from collections import Counter, defaultdict
from pathlib import Path

from labtf.curate.core import GROUPS_NAME, list_images, workspace_images
from labtf.curate.report import record_step
from labtf.errors import LabtfError
from labtf.manifest import Sample, read_manifest, write_manifest

log = logging.getLogger(__name__)

SPLIT_NAME = "split.csv"


def split_units(items: list[tuple[str, str]], groups: list[list[str]]) -> list[list[tuple[str, str]]]:
    """Units of (path, label): each group's present members together, everyone else alone."""
    label_of = dict(items)
    unit_of: dict[str, int] = {}
    units: list[list[tuple[str, str]]] = []
    for g in groups:
        members = [p for p in g if p in label_of and p not in unit_of]
        if members:
            for p in members:
                unit_of[p] = len(units)
            units.append([(p, label_of[p]) for p in members])
    for p, label in items:
        if p not in unit_of:
            unit_of[p] = len(units)
            units.append([(p, label)])
    return units


def assign(units: list[list[tuple[str, str]]], test_fraction: float, val_fraction: float,
           seed: int, known: dict[str, str] | None = None) -> dict[str, str]:
    """Give every path a split; units never divide.

    Args:
        units: from :func:`split_units`.
        test_fraction, val_fraction: shares of each class (val taken from training).
        seed: shuffle seed.
        known: earlier sides (path -> split) to keep.

    Returns:
        path -> ``train`` | ``val`` | ``test``.
    """
    known = known or {}
    out: dict[str, str] = {}
    have: dict[str, Counter] = defaultdict(Counter)
    total: Counter = Counter()
    fresh: dict[str, list[list[tuple[str, str]]]] = defaultdict(list)
    for u in units:
        for _, label in u:
            total[label] += 1
        sides = Counter(known[p] for p, _ in u if p in known)
        if sides:
            side = sides.most_common(1)[0][0]
            for p, label in u:
                out[p] = side
                have[label][side] += 1
        else:
            major = Counter(label for _, label in u).most_common(1)[0][0]
            fresh[major].append(u)
    for label in sorted(fresh):
        us = sorted(fresh[label], key=lambda u: u[0][0])
        random.Random(f"{seed}:{label}").shuffle(us)
        n = total[label]
        want = {"test": round(n * test_fraction) if n >= 2 else 0,
                "val": round(n * val_fraction) if n >= 3 else 0}
        if test_fraction > 0 and n >= 2:
            want["test"] = max(1, want["test"])
        for u in us:
            side = "train"
            for s in ("test", "val"):
                if have[label][s] < want[s]:
                    side = s
                    break
            for p, lab in u:
                out[p] = side
                have[lab][side] += 1
    return out


def grouped_split(work: str | os.PathLike, *, test_fraction: float = 0.18,
                  val_fraction: float = 0.1, seed: int = 0,
                  out: str | os.PathLike | None = None) -> Path:
    """Write the grouped split manifest of a workspace.

    Args:
        work: curated workspace (``images/``, optional ``curation/groups.json``).
        test_fraction: share of each class for test (poster: 0.18).
        val_fraction: share of each class for validation, taken from training.
        seed: split seed.
        out: manifest path [``WORK/split.csv``]; reused when it exists.

    Returns:
        The manifest path.

    Raises:
        LabtfError: bad fractions or an empty workspace.
    """
    if not (0 <= test_fraction < 1 and 0 <= val_fraction < 1 and test_fraction + val_fraction < 1):
        raise LabtfError(f"test fraction {test_fraction} and val fraction {val_fraction} must be in "
                         "[0, 1) and add up to less than 1")
    work = Path(work)
    images = workspace_images(work)
    items = list_images(images)
    if not items:
        raise LabtfError(f"{images} holds no images to split")
    gfile = work / "curation" / GROUPS_NAME
    groups = [g["paths"] for g in json.loads(gfile.read_text())["groups"]] if gfile.is_file() else []
    if not gfile.is_file():
        log.warning("no %s: splitting without near-duplicate groups (run 'labtf curate' first)", gfile)
    out = Path(out) if out else work / SPLIT_NAME
    known: dict[str, str] = {}
    if out.is_file():
        for s in read_manifest(out, validate=False).samples:
            known[Path(os.path.relpath(s.path, work)).as_posix()] = s.split
    units = split_units(items, groups)
    sides = assign(units, test_fraction, val_fraction, seed, known)
    samples = [Sample(str(work / p), label, sides[p]) for p, label in items]
    write_manifest(out, samples)
    straddle = sum(1 for u in units if len({sides[p] for p, _ in u}) > 1)
    c = Counter(s.split for s in samples)
    per = defaultdict(Counter)
    for s in samples:
        per[s.label][s.split] += 1
    record_step(work, "split", {
        "before": len(samples), "after": len(samples), "train": c["train"], "val": c["val"],
        "test": c["test"], "groups_used": sum(len(u) > 1 for u in units), "groups_straddling": straddle,
        "kept_from_previous": sum(1 for p, _ in items if p in known), "seed": seed,
        "test_fraction": test_fraction, "val_fraction": val_fraction,
        "per_class": {k: f"{v['train']}/{v['val']}/{v['test']}" for k, v in sorted(per.items())}})
    log.info("split: %d train, %d val, %d test (%d near-duplicate group(s) kept whole) -> %s",
             c["train"], c["val"], c["test"], sum(len(u) > 1 for u in units), out)
    return out


#: Above this many images the split-time near-duplicate check is skipped (hashing
#: costs about 4 ms an image; run ``labtf curate`` on big sets).
LEAK_CHECK_MAX = 20_000


def straddling_pairs(samples: list[Sample]) -> list[tuple[str, str]]:
    """Near-duplicate pairs (pHash + correlation, no embeddings) with one image in test.

    Args:
        samples: samples with their split.

    Returns:
        (test path, train/val path) pairs; unreadable files are left out.
    """
    from labtf.curate.phash import image_signature, near_duplicate_pairs

    sigs, kept = [], []
    for s in samples:
        try:
            sigs.append(image_signature(s.path))
            kept.append(s)
        except (OSError, ValueError):
            continue
    out = []
    for i, j, *_ in near_duplicate_pairs(sigs):
        a, b = kept[i], kept[j]
        if (a.split == "test") != (b.split == "test"):
            out.append((a.path, b.path) if a.split == "test" else (b.path, a.path))
    return out


def warn_straddling(samples: list[Sample]) -> int:
    """Log a warning when a fresh plain split put near-duplicates on both sides of test.

    Returns:
        The number of straddling pairs found (0 when the set is too big to check).
    """
    if len(samples) > LEAK_CHECK_MAX:
        log.debug("near-duplicate check skipped: %d images > %d", len(samples), LEAK_CHECK_MAX)
        return 0
    pairs = straddling_pairs(samples)
    if pairs:
        a, b = pairs[0]
        log.warning("%d possible near-duplicate pair(s) straddle test and train/val (e.g. %s and "
                    "%s); test accuracy may be optimistic. For a split that keeps them together: "
                    "'labtf curate WORK' and 'labtf split WORK' (images in WORK/images/)",
                    len(pairs), a, b)
    return len(pairs)
