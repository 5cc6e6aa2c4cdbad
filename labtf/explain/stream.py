"""Streaming helpers of ``labtf explain`` / ``explain-eval``: images in batches, progress, sampling.

Memory is bounded by the batch, not by the number of images: images are read
per batch (a bad file is skipped with a warning) and one log line per batch
reports the rate.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Iterator

import numpy as np

log = logging.getLogger(__name__)

#: Images per batch of ``labtf explain`` / ``explain-eval``.
DEFAULT_BATCH_SIZE = 8


def even_sample(labels: list[str], n: int | None, seed: int = 0) -> list[int]:
    """Indices of ``n`` items spread evenly across the labels (seeded), in input order.

    Each label gets ``n // k`` items (labels with fewer give all they have and the
    rest go to the others, one at a time in label order); which items of a label are
    taken is drawn with ``seed``.

    Args:
        labels: one label per item.
        n: how many to take; None or >= len(labels) takes all.
        seed: seed of the draw.

    Returns:
        Sorted indices into ``labels``.
    """
    if n is None or n >= len(labels):
        return list(range(len(labels)))
    rng = np.random.default_rng(seed)
    groups: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        groups.setdefault(lab, []).append(i)
    pools = [list(rng.permutation(groups[k])) for k in sorted(groups)]
    taken: list[int] = []
    while len(taken) < n:
        for pool in pools:
            if pool and len(taken) < n:
                taken.append(int(pool.pop(0)))
    return sorted(taken)


class Progress:
    """One log line per batch: images done, images/s and the time left.

    Args:
        what: the task's name in the line.
        total: images to do.
    """

    def __init__(self, what: str, total: int) -> None:
        self.what, self.total, self.done = what, total, 0
        self.start = time.perf_counter()

    def update(self, n: int) -> None:
        """``n`` more images are done."""
        self.done += n
        secs = time.perf_counter() - self.start
        rate = self.done / secs if secs > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        log.info("%s: %d/%d images, %.2f images/s, %.0f s left", self.what, self.done,
                 self.total, rate, left)


def image_batches(explainer, paths: list[str], batch_size: int = DEFAULT_BATCH_SIZE,
                  what: str = "explain", on_error: Callable[[int, str], None] | None = None
                  ) -> Iterator[tuple[list[int], np.ndarray]]:
    """Read images as the model sees them, ``batch_size`` at a time, logging progress.

    Args:
        explainer: a :class:`labtf.explain.core.Explainer` (its ``load``).
        paths: image files.
        batch_size: images per batch (>= 1).
        what: name in the progress line.
        on_error: called with (index, message) for an unreadable file; default: a warning.

    Yields:
        ``(indices into paths, uint8 (B, S, S, 3))``; unreadable files are skipped (a batch
        can be smaller or, when all its files are bad, left out).
    """
    from labtf.images import BadImage

    progress = Progress(what, len(paths))
    for start in range(0, len(paths), max(1, batch_size)):
        idx, imgs = [], []
        chunk = range(start, min(start + max(1, batch_size), len(paths)))
        for i in chunk:
            try:
                imgs.append(explainer.load(paths[i]))
                idx.append(i)
            except BadImage as exc:
                if on_error is None:
                    log.warning("skipped: %s", exc)
                else:
                    on_error(i, str(exc))
        if imgs:
            yield idx, np.stack(imgs)
        progress.update(len(chunk))
