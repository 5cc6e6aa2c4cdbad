"""Two-stage transfer learning into a run folder, resumable.

Stage 1 trains the float32 head on a frozen backbone; stage 2 unfreezes the
backbone's top blocks at a lower learning rate. Each stage checkpoints every
epoch (``keras.callbacks.BackupAndRestore``), so a killed run continues with
``resume=True`` where it stopped. Only ``keras`` is used here, apart from the
tf.data input pipeline.

The kept weights are those of the epoch with the lowest validation loss over
both stages (training loss without a validation split); early stopping watches
the same. Validation accuracy is too coarse for that on small validation sets:
with 35 images it moves in steps of 2.9 points, ties for many epochs, and a
first-stage epoch that merely reached the plateau first was kept over every
fine-tuning epoch.
"""
from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import keras
import numpy as np

from labtf.backbones import get_backbone
from labtf.config import TrainConfig
from labtf.errors import LabtfError
from labtf.manifest import DatasetIndex, write_manifest
from labtf.run import Run, write_json

log = logging.getLogger(__name__)

BEST = "best.weights.h5"


def class_weights(index: DatasetIndex) -> dict[int, float]:
    """Inverse-frequency class weights over the training split (mean 1)."""
    counts = np.array([index.counts("train")[c] for c in index.classes], float)
    counts = np.maximum(counts, 1.0)
    w = counts.sum() / (len(counts) * counts)
    return {i: float(v) for i, v in enumerate(w)}


def resolve_config(config: TrainConfig, out: Path, resume: bool) -> TrainConfig:
    """Check the run folder before any work; never overwrite a finished or foreign run.

    Returns:
        The config to use (the saved one when resuming).

    Raises:
        LabtfError: the folder exists without ``resume``, or ``resume`` finds no run.
    """
    if out.exists() and not out.is_dir():
        raise LabtfError(f"--out {out} is a file, not a run folder; pass a new folder name")
    if resume:
        if not (out / "config.json").is_file():
            raise LabtfError(f"--resume: {out} holds no run to continue; drop --resume to start one")
        saved = Run(out).config
        if saved.to_dict() != config.to_dict():
            log.warning("--resume: using the run's saved config, not the options given now")
        return saved
    if out.exists() and any(out.iterdir()):
        raise LabtfError(f"run folder {out} already exists and is not empty; pass --resume to "
                         "continue it or --out to choose a new folder")
    return config


def is_finished(out: Path) -> bool:
    """True when ``out`` holds a completed run (its model and run.json are written last)."""
    return (Path(out) / Run.MODEL).is_file() and (Path(out) / "run.json").is_file()


class _ResumedEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping that starts from the patience count of the epochs a killed process ran."""

    def __init__(self, prior: list[float], **kwargs):
        super().__init__(**kwargs)
        self._prior = prior

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        _, self.wait, self.best = _early_stop_state(self._prior, self.patience)


def _early_stop_state(values: list[float], patience: int) -> tuple[bool, int, float | None]:
    """Replay keras' EarlyStopping (mode min, min_delta 0) over a stage's monitor values.

    Returns:
        (stopped, wait, best) after the last value.
    """
    wait, best = 0, None
    for epoch, v in enumerate(values):
        wait += 1
        if best is None or v < best:
            best, wait = v, 0
        elif patience and wait >= patience and epoch > 0:
            return True, wait, best
    return False, wait, best


def _callbacks(run: Path, stage: int, monitor: str, patience: int, best_so_far: float | None,
               prior: list[float], full: keras.Model):
    from labtf.checkpoints import AtomicBackupAndRestore, FullModelCheckpoint

    # Order matters for a kill between two of them: the history row and the best
    # checkpoint are written before the backup that commits the epoch; a resume drops
    # rows of epochs the backup does not hold (they run again).
    cbs = [
        keras.callbacks.CSVLogger(str(run / f"history_stage{stage}.csv"), append=True),
        # the whole classifier, also while a sub-model trains on the trunk cache
        FullModelCheckpoint(full, str(run / BEST), monitor=monitor, mode="min",
                            save_best_only=True, initial_value_threshold=best_so_far),
        # kept until state.json records the stage: a kill between the last epoch and that
        # write must not run the stage again from epoch 0
        AtomicBackupAndRestore(str(_backup(run, stage)), delete_checkpoint=False),
    ]
    if patience:
        cbs.append(_ResumedEarlyStopping(prior, monitor=monitor, mode="min", patience=patience))
    return cbs


def fit_from_backup(model: keras.Model, *args, **kwargs) -> keras.callbacks.History:
    """``model.fit`` that starts at epoch 0 unless its own BackupAndRestore restores a later one.

    BackupAndRestore sets ``model._initial_epoch`` from its backup and keras never clears
    it, so a second ``fit`` (stage 2 after a resumed stage 1) would start at the first
    fit's epoch and lose epochs.
    """
    model._initial_epoch = None
    try:
        return model.fit(*args, **kwargs)
    finally:
        model._initial_epoch = None


def _backup(run: Path, stage: int) -> Path:
    return run / "backup" / f"stage{stage}"


def _stage_rows(run: Path, stage: int) -> list[dict]:
    """The stage's history rows of the epochs its backup holds (a later row is run again)."""
    import csv
    import json

    f = run / f"history_stage{stage}.csv"
    if not f.is_file():
        return []
    meta = _backup(run, stage) / "training_metadata.json"
    done = json.loads(meta.read_text())["epoch"] if meta.is_file() else 0
    with open(f, newline="") as fh:
        text = fh.read()
    rows = list(csv.DictReader(text.splitlines()))
    keep = [r for r in rows if _is_num(r.get("epoch")) and int(float(r["epoch"])) < done]
    if len(keep) != len(rows):      # rewrite without the rows of epochs that run again
        lines = text.splitlines()
        from labtf.run import write_text

        write_text(f, "\n".join(lines[:1 + len(keep)]) + "\n")
    return keep


def _best(history: keras.callbacks.History | None, monitor: str, prior: float | None) -> float | None:
    vals = list((history.history if history else {}).get(monitor, []))
    vals += [prior] if prior is not None else []
    return min(vals) if vals else None


def _kept_epoch(history: list[dict], monitor: str) -> dict:
    """The history row whose weights were kept: the first with the lowest ``monitor``."""
    rows = [r for r in history if monitor in r]
    return min(rows, key=lambda r: r[monitor]) if rows else {}


def _compile(model: keras.Model, lr, smoothing: float) -> None:
    model.compile(optimizer=keras.optimizers.Adam(lr),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=smoothing),
                  metrics=["accuracy"])


def _load_best(model: keras.Model, run: Path) -> None:
    """The best checkpoint's model weights; its optimizer state belongs to the stage that wrote it."""
    skip = [model.optimizer] if getattr(model, "optimizer", None) is not None else None
    model.load_weights(run / BEST, objects_to_skip=skip)


def _schedule(config: TrainConfig, stage: int, lr: float, epochs: int, steps: int):
    """Stage 2 with ``lr_schedule='cosine'``: one warm-up epoch, then cosine decay to 0."""
    if config.lr_schedule != "cosine" or stage != 2:
        return lr
    total = max(1, epochs * steps)
    warm = min(steps, total // 2)
    return keras.optimizers.schedules.CosineDecay(0.0, max(1, total - warm), warmup_target=lr,
                                                  warmup_steps=warm)


def train(config: TrainConfig, out: str | Path, resume: bool = False, verbose: int = 2) -> Run:
    """Train a classifier and save a complete run folder.

    With ``strategy="multiworker"`` every worker of the cluster in ``TF_CONFIG``
    calls this; only the chief (worker 0) writes ``out``, the others train the
    same steps into a scratch folder that is removed at the end.

    Args:
        config: the training config (validated).
        out: run folder (created; must be new unless ``resume``).
        resume: continue a killed run from its last checkpoint.
        verbose: Keras fit verbosity (2: one line per epoch).

    Returns:
        The finished :class:`~labtf.run.Run` (the chief's folder).

    Raises:
        LabtfError: bad data, an existing run folder, unobtainable weights.
    """
    from labtf.distribute import lost_worker_errors, worker

    out, me = Path(out), worker(config.strategy)
    if me.chief:
        with lost_worker_errors(me):
            return _train(config, out, resume, verbose)
    scratch = _worker_folder(out, me.index, resume)
    try:
        with lost_worker_errors(me):
            _train(config, scratch, resume, verbose)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log.info("worker %d done; the chief (worker 0) wrote the run to %s", me.index, out)
    return Run(out)


def scratch_folder(out: Path, index: int) -> Path:
    """Where non-chief worker ``index`` of the job writing ``out`` trains (in the temp folder)."""
    import hashlib
    import tempfile

    key = hashlib.sha1(str(Path(out).resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"labtf-worker{index}-{key}"


def _worker_folder(out: Path, index: int, resume: bool) -> Path:
    """A non-chief worker's scratch run folder, fresh; on ``resume`` a copy of the chief's.

    Every worker restores the chief's checkpoint, so ``out`` must be the same
    folder for all of them (one machine, or a shared file system).

    Raises:
        LabtfError: ``resume`` and the chief's run folder is not visible here.
    """
    scratch = scratch_folder(out, index)
    shutil.rmtree(scratch, ignore_errors=True)
    if resume:
        if not (out / "config.json").is_file():
            raise LabtfError(f"worker {index}: --resume restores the chief's checkpoint from {out}, "
                             "which is not here; put --out on a file system all workers share")
        shutil.copytree(out, scratch, ignore=shutil.ignore_patterns(".*.tmp", "*.png", Run.MODEL))
    return scratch


def _train(config: TrainConfig, out: Path, resume: bool, verbose: int) -> Run:
    """:func:`train` in one process, writing ``out``."""
    from labtf.data import AUGMENT_PRESETS, make_dataset
    from labtf.distribute import fit_multiworker, shard_by_data, strategy_scope
    from labtf.model import build_classifier, cam_layer_name, freeze_backbone, set_precision
    from labtf.model import unfreeze_top
    from labtf.plots import plot_history
    from labtf.sources import load_index

    config = resolve_config(config, out, resume)
    if resume and is_finished(out):
        log.info("%s is a finished run (model.keras, run.json): nothing to resume, nothing "
                 "changed; train again with a new --out", out)
        return Run(out)
    scope, replicas = strategy_scope(config.strategy)  # multiworker: before any TensorFlow op
    spec = get_backbone(config.backbone)
    size = config.input_size
    t0 = time.time()
    index = load_index(config.data, config.seed, config.test_fraction, config.val_fraction,
                       config.split_file)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", config.to_dict())
    write_manifest(out / "split.csv", index.samples)
    write_json(out / "classes.json", index.classes)
    train_s, val_s = index.subset("train"), index.subset("val")
    log.info("data: %d train, %d val, %d test images, %d classes, %d skipped", len(train_s),
             len(val_s), len(index.subset("test")), len(index.classes), len(index.skipped))
    keras.utils.set_random_seed(config.seed)
    set_precision(config.mixed_precision)
    batch = config.batch_size * replicas
    aug = AUGMENT_PRESETS[config.augment_preset] if config.augment else None
    train_ds = make_dataset(train_s, index.classes, size, batch, training=True, seed=config.seed,
                            augment_cfg=aug, cache=config.cache, resize=config.resize)
    val_ds = make_dataset(val_s, index.classes, size, batch, cache=config.cache,
                          resize=config.resize) if val_s else None
    if config.strategy == "multiworker":
        train_ds, val_ds = shard_by_data(train_ds), val_ds and shard_by_data(val_ds)
    monitor = "val_loss" if val_ds is not None else "loss"
    weights = class_weights(index) if config.class_weights else None
    with scope():
        model = build_classifier(spec, len(index.classes), size,
                                 None if config.weights == "none" else "imagenet", config.dropout)
    state_file = out / "state.json"
    state = Run(out).read_json("state.json") if state_file.is_file() else {"done": [], "best": None}
    if state.get("monitor") != monitor:     # a run resumed from before val_loss selection
        state["best"] = None
    cached = None
    if config.cache_views and config.strategy == "multiworker":
        log.info("multiworker: training on the whole network every epoch (tf.data shards the "
                 "images; the trunk cache is for one process)")
    elif config.cache_views:
        from labtf.trunk_cache import cached_stages

        cached = cached_stages(model, spec, config, out, train_s, val_s, index.classes, size,
                               aug, batch)
    stages = [(1, config.epochs, config.learning_rate),
              (2, config.fine_tune_epochs, config.fine_tune_learning_rate)]
    for stage, epochs, lr in stages:
        if epochs == 0 or (stage == 2 and config.fine_tune_blocks == 0):
            continue
        if stage in state["done"]:
            log.info("stage %d already done; skipping", stage)
            continue
        rows = _stage_rows(out, stage)
        prior = [float(r[monitor]) for r in rows if _is_num(r.get(monitor))]
        best = min([v for v in (state["best"], *prior) if v is not None], default=None)
        stopped = _early_stop_state(prior, config.early_stopping_patience)[0]
        t_stage = time.time()
        if rows and (len(rows) >= epochs or stopped):
            log.info("stage %d finished before the interruption (%d epoch(s))", stage, len(rows))
        else:
            freeze_backbone(model)
            if stage == 2:
                _load_best(model, out)
                unfreeze_top(model, spec, config.fine_tune_blocks)
            with scope():   # a sub-model (trunk cache) is a new model: build it in the scope
                fit_model, fit_train, fit_val, extra = (cached.stage(stage) if cached is not None
                                                        else (model, train_ds, val_ds, []))
            steps = len(fit_train) if cached is not None else -(-len(train_s) // batch)
            with scope():
                _compile(fit_model, _schedule(config, stage, lr, epochs, steps),
                         config.label_smoothing)
            if config.strategy == "multiworker":
                fit_multiworker(fit_model)
            log.info("stage %d: %d epoch(s) at lr %g%s%s", stage, epochs, lr,
                     " (warm-up, cosine decay)" if config.lr_schedule == "cosine" and stage == 2
                     else "", f", resuming after epoch {len(rows)}" if rows else "")
            callbacks = _callbacks(out, stage, monitor, config.early_stopping_patience, best,
                                   prior, model) + extra
            hist = fit_from_backup(fit_model, fit_train, validation_data=fit_val, epochs=epochs,
                                   class_weight=weights, verbose=verbose, shuffle=False,
                                   callbacks=callbacks)
            best = _best(hist, monitor, best)
        state = {"done": state["done"] + [stage], "monitor": monitor, "best": best,
                 "fit_seconds": state.get("fit_seconds", 0.0) + time.time() - t_stage}
        write_json(state_file, state)
        shutil.rmtree(_backup(out, stage), ignore_errors=True)
    _load_best(model, out)
    tmp = out / ".model.tmp.keras"
    model.save(tmp)
    tmp.replace(out / Run.MODEL)
    shutil.rmtree(out / "backup", ignore_errors=True)
    history = _merge_history(out)
    plot_history(history, out / "history.png")
    kept = _kept_epoch(history, monitor)
    log.info("kept the weights of epoch %s (stage %s): %s", kept.get("epoch"), kept.get("stage"),
             ", ".join(f"{k} {v:.4f}" for k, v in kept.items() if k not in ("epoch", "stage")))
    write_json(out / "run.json", {
        "backbone": spec.name, "image_size": size, "resize": config.resize,
        "cam_layer": cam_layer_name(model, spec),
        "preprocessing": spec.preprocessing, "weights": config.weights,
        "num_classes": len(index.classes), "n_train": len(train_s), "n_val": len(val_s),
        "n_test": len(index.subset("test")), "skipped": [p for p, _ in index.skipped],
        "train_seconds": round(time.time() - t0, 1),
        "fit_seconds": round(state.get("fit_seconds", 0.0), 1), "keras": keras.__version__,
        "backend": keras.backend.backend(), "monitor": monitor, "best_" + monitor: state["best"],
        "kept_epoch": kept})
    log.debug("run saved to %s", out)   # the CLI prints it
    return Run(out)


def _is_num(value: str | None) -> bool:
    """True for a CSVLogger cell holding a number (it writes 'NA' for missing values)."""
    try:
        float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


def _merge_history(out: Path) -> list[dict]:
    """Combine the per-stage CSV logs into history.csv (epochs numbered across stages)."""
    import csv

    rows, epoch = [], 0
    for stage in (1, 2):
        f = out / f"history_stage{stage}.csv"
        if not f.is_file():
            continue
        with open(f, newline="") as fh:
            for row in csv.DictReader(fh):
                epoch += 1
                rows.append({"epoch": epoch, "stage": stage,
                             **{k: float(v) for k, v in row.items() if k != "epoch" and _is_num(v)}})
    keys = ["epoch", "stage"] + sorted({k for r in rows for k in r} - {"epoch", "stage"})
    lines = [",".join(keys)] + [",".join(str(r.get(k, "")) for k in keys) for r in rows]
    from labtf.run import write_text

    write_text(out / "history.csv", "\n".join(lines) + "\n")
    return rows
