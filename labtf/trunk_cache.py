"""Training on cached trunk activations: the frozen lower network runs once per view, not per epoch.

labtf fine-tunes only the backbone's top blocks and keeps BatchNorm frozen, so
everything below the fine-tuning boundary (``spec.block_ends[blocks - 1]``) is a
fixed function of the input. With ``cache_views=K`` the training images are
augmented K times, pushed through that frozen trunk once, and the activations
kept (float16, in the run's ``backup/`` folder so a killed run does not redo
them); validation images once, without augmentation. Stage 1 (the head, on
globally pooled features) and stage 2 (top blocks + head) then train on
view ``epoch % K`` of every image: on two CPU cores the head stage drops from
minutes to seconds and a fine-tuning epoch costs the top blocks only.

Differences from training on the fly: each image is seen in K fixed views
rather than a fresh one per epoch, and dropout/stochastic depth inside the
frozen trunk is not applied (the trunk runs in inference mode). Only keras is
used here, apart from the tf.data pipeline that makes the views.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import keras
import numpy as np

from labtf.errors import LabtfError

log = logging.getLogger(__name__)

CACHE_DIR = "trunk_cache"


def boundary_layer(model: keras.Model, spec, fine_tune_blocks: int, fine_tune: bool) -> str:
    """The layer whose output is cached: the fine-tuning boundary, or the GAP's input.

    Raises:
        LabtfError: the backbone declares no block boundaries (nothing can be cached).
    """
    from labtf.model import GAP

    if not fine_tune:
        return model.get_layer(GAP).input._keras_history.operation.name
    if not spec.block_ends:
        raise LabtfError(f"backbone {spec.name} declares no block boundaries; train it with "
                         "cache_views=0")
    return spec.block_ends[min(fine_tune_blocks, len(spec.block_ends)) - 1]


def sub_model(model: keras.Model, start: str, end: str | None = None) -> keras.Model:
    """The part of ``model`` from layer ``start``'s output to ``end``'s output (default: the end).

    The sub-model shares its layers (and weights) with ``model``.
    """
    inp = model.get_layer(start).output
    out = model.get_layer(end).output if end else model.output
    return keras.Model(inp, out, name=f"{model.name}_from_{start}")


def _save(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, arr)
    tmp.replace(path)


def compute_views(trunk: keras.Model, make_ds, views: int, folder: Path, tag: str) -> tuple:
    """Activations and labels of ``views`` passes, each over ``make_ds(view)``; cached per view.

    Args:
        trunk: input -> boundary activations.
        make_ds: view index -> batched ``(images, one-hot labels)`` dataset, seeded by
            the view (so a view recomputed after a resume is the same view).
        views: passes to keep.
        folder: where each finished view is stored (reused on resume).
        tag: file name prefix (``train`` / ``val``).

    Returns:
        ``(x, y)``: float16 (views, N, ...) and float32 (views, N, C).
    """
    folder.mkdir(parents=True, exist_ok=True)
    xs, ys = [], []
    for v in range(views):
        fx, fy = folder / f"{tag}_x{v}.npy", folder / f"{tag}_y{v}.npy"
        if fx.is_file() and fy.is_file():
            xs.append(np.load(fx))
            ys.append(np.load(fy))
            continue
        t0, parts, labels = time.time(), [], []
        for images, y in make_ds(v):
            parts.append(np.asarray(trunk(images, training=False), np.float16))
            labels.append(np.asarray(y, np.float32))
        x, y = np.concatenate(parts), np.concatenate(labels)
        _save(fy, y)
        _save(fx, x)
        xs.append(x)
        ys.append(y)
        log.info("%s view %d/%d: %d images through the frozen trunk in %.0f s", tag, v + 1, views,
                 len(x), time.time() - t0)
    return np.stack(xs), np.stack(ys)


class ViewSequence(keras.utils.PyDataset):
    """Batches of cached view ``epoch % K`` in a seeded order per epoch.

    Args:
        x: (K, N, ...) cached activations.
        y: (K, N, C) labels of each view.
        batch_size: batch size.
        seed: order seed.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, seed: int) -> None:
        super().__init__()
        self.x, self.y, self.batch_size, self.seed = x, y, int(batch_size), int(seed)
        self.epoch = 0
        self._order = self._make_order()

    def _make_order(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.x.shape[1])

    def set_epoch(self, epoch: int) -> None:
        """Select the view and order of ``epoch`` (called by :class:`EpochSync`)."""
        self.epoch = int(epoch)
        self._order = self._make_order()

    def __len__(self) -> int:
        return math.ceil(self.x.shape[1] / self.batch_size)

    def __getitem__(self, i: int):
        idx = np.sort(self._order[i * self.batch_size:(i + 1) * self.batch_size])
        v = self.epoch % self.x.shape[0]
        return self.x[v][idx].astype(np.float32), self.y[v][idx]


class EpochSync(keras.callbacks.Callback):
    """Tells a :class:`ViewSequence` the true epoch number (also after a resume)."""

    def __init__(self, seq: ViewSequence) -> None:
        super().__init__()
        self.seq = seq

    def on_epoch_begin(self, epoch, logs=None):
        self.seq.set_epoch(epoch)


class CachedStages:
    """What each training stage fits when the trunk is cached.

    Args:
        model: the whole classifier (its layers are shared by the sub-models).
        boundary: name of the cached layer (see :func:`boundary_layer`).
        train: ``(x, y)`` cached training views.
        val: ``(x, y)`` cached validation view, or None.
        batch_size: batch size.
        seed: order seed.
    """

    def __init__(self, model: keras.Model, boundary: str, train: tuple, val: tuple | None,
                 batch_size: int, seed: int) -> None:
        from labtf.model import GAP

        self.model, self.boundary, self.batch, self.seed = model, boundary, batch_size, seed
        self.train, self.val = train, val
        self._gap = GAP
        self._pooled: tuple | None = None

    def _pool(self, x: np.ndarray) -> np.ndarray:
        """Pooled features (GAP output) of cached activations, in batches."""
        if self.boundary == self.model.get_layer(self._gap).input._keras_history.operation.name:
            return x.astype(np.float32).mean(axis=(-3, -2)).astype(np.float16)
        to_gap = sub_model(self.model, self.boundary, self._gap)
        flat = x.reshape((-1,) + x.shape[2:])
        out = [np.asarray(to_gap(flat[i:i + 64].astype(np.float32), training=False), np.float16)
               for i in range(0, len(flat), 64)]
        return np.concatenate(out).reshape(x.shape[:2] + (-1,))

    def stage(self, stage: int) -> tuple:
        """``(model to fit, training data, validation data, extra callbacks)`` for a stage."""
        if stage == 1:
            if self._pooled is None:
                pooled_val = ((self._pool(self.val[0])[0].astype(np.float32), self.val[1][0])
                              if self.val else None)
                self._pooled = (self._pool(self.train[0]), pooled_val)
            fit_model = sub_model(self.model, self._gap)
            x, val = self._pooled[0], self._pooled[1]
        else:
            fit_model = sub_model(self.model, self.boundary)
            x = self.train[0]
            val = (self.val[0][0].astype(np.float32), self.val[1][0]) if self.val else None
        seq = ViewSequence(x, self.train[1], self.batch, self.seed + stage)
        return fit_model, seq, val, [EpochSync(seq)]


def cached_stages(model: keras.Model, spec, config, out: Path, train_s: list, val_s: list,
                  classes: list[str], size: int, aug, batch: int) -> "CachedStages":
    """Cache the frozen trunk's activations for a training run; returns the stage plan.

    Args:
        model: the whole classifier; spec: its backbone spec; config: the TrainConfig.
        out: run folder (the cache goes to ``out/backup/CACHE_DIR``).
        train_s, val_s: training and validation samples; classes: class names.
        size: input side; aug: AugmentConfig or None; batch: global batch size.
    """
    from labtf.data import make_dataset

    fine = config.fine_tune_epochs > 0 and config.fine_tune_blocks > 0
    boundary = boundary_layer(model, spec, config.fine_tune_blocks, fine)
    trunk = keras.Model(model.inputs, model.get_layer(boundary).output)
    folder = out / "backup" / CACHE_DIR
    log.info("caching the frozen trunk (up to %s) for %d augmented view(s) of %d images",
             boundary, config.cache_views, len(train_s))
    train = compute_views(trunk, lambda v: make_dataset(
        train_s, classes, size, batch, training=True, seed=config.seed * 1000 + v,
        augment_cfg=aug, cache=False, resize=config.resize), config.cache_views, folder, "train")
    val = compute_views(trunk, lambda v: make_dataset(
        val_s, classes, size, batch, cache=False, resize=config.resize), 1, folder,
        "val") if val_s else None
    return CachedStages(model, boundary, train, val, batch, config.seed)   # global batch
