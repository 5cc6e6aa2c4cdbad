"""Evaluate a run on its test split (or another dataset) in the poster's layout.

Writes into the run folder: ``metrics.json`` (``accuracy``, ``top_k_accuracy``,
``per_class``, ``n_test``...), ``confusion.csv`` / ``confusion.md`` (class, #
test images, the counts, class acc. %, TOTAL row), ``confusion.png`` and
``predictions.csv``.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from labtf.errors import LabtfError
from labtf.manifest import Sample, read_manifest
from labtf.run import Run, write_json, write_text

log = logging.getLogger(__name__)


def predict_samples(model, samples: list[Sample], classes: list[str], image_size: int,
                    batch_size: int = 32, resize: str = "crop") -> np.ndarray:
    """Class probabilities (N, C) for samples, in order."""
    from labtf.data import make_dataset

    ds = make_dataset(samples, classes, image_size, batch_size, cache=False, one_hot=False,
                      resize=resize)
    return np.asarray(model.predict(ds.map(lambda x, y: x), verbose=0), np.float64)


def confusion_table(cm: np.ndarray, classes: list[str]) -> list[list[str]]:
    """The poster's table: header, one row per class, TOTAL row."""
    n = len(classes)
    header = ["Object", "Class", "# Test Images"] + [str(i + 1) for i in range(n)] + ["Class Acc. (%)"]
    rows = [header]
    for i, c in enumerate(classes):
        total = int(cm[i].sum())
        acc = 100.0 * cm[i, i] / total if total else float("nan")
        rows.append([c, str(i + 1), str(total)] + [str(int(v)) for v in cm[i]] + [f"{acc:.2f}"])
    n_all = int(cm.sum())
    overall = 100.0 * np.trace(cm) / n_all if n_all else float("nan")
    rows.append(["TOTAL", "", str(n_all)] + [""] * n + [f"{overall:.2f}"])
    return rows


def _csv(rows: list[list[str]]) -> str:
    import csv
    import io

    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _markdown(rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(out) + "\n"


def compute_metrics(y_true: np.ndarray, probs: np.ndarray, classes: list[str], k: int = 3) -> dict:
    """Accuracy, balanced accuracy, macro F1, top-k accuracy, per-class scores, confusion matrix.

    ``balanced_accuracy`` is the mean recall over the classes present in ``y_true``;
    ``macro_f1`` the unweighted mean F1 over the classes in ``y_true`` or predicted
    (scikit-learn's definitions).

    Args:
        y_true: true class indices (N,).
        probs: class probabilities (N, C).
        classes: class names in index order.
        k: the k of top-k accuracy (capped at C - 1).

    Returns:
        The metrics dict (the body of ``metrics.json``).
    """
    import warnings

    from sklearn.metrics import (balanced_accuracy_score, confusion_matrix, f1_score,
                                 precision_recall_fscore_support)

    n = len(classes)
    y_pred = probs.argmax(axis=1)
    k = max(1, min(k, n - 1))
    topk = np.argsort(-probs, axis=1)[:, :k]
    cm = confusion_matrix(y_true, y_pred, labels=list(range(n)))
    p, r, f, support = precision_recall_fscore_support(y_true, y_pred, labels=list(range(n)),
                                                       zero_division=0)
    per_class = {c: {"n": int(support[i]),
                     "accuracy": float(cm[i, i] / support[i]) if support[i] else None,
                     "precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i])}
                 for i, c in enumerate(classes)}
    with warnings.catch_warnings():  # "y_pred contains classes not in y_true" on a subset
        warnings.simplefilter("ignore")
        balanced = float(balanced_accuracy_score(y_true, y_pred)) if len(y_true) else 0.0
    macro_f1 = float(f1_score(y_true, y_pred, average="macro", zero_division=0)) if len(y_true) else 0.0
    return {"accuracy": float((y_pred == y_true).mean()) if len(y_true) else 0.0,
            "balanced_accuracy": balanced, "macro_f1": macro_f1,
            "top_k": k, "top_k_accuracy": float((topk == y_true[:, None]).any(axis=1).mean()),
            "per_class": per_class, "n_test": int(len(y_true)), "confusion_matrix": cm.tolist()}


def summary_line(m: dict) -> str:
    """One line for the terminal: accuracy, balanced accuracy, macro F1, top-k, count."""
    return (f"accuracy {100 * m['accuracy']:.2f}%  balanced {100 * m['balanced_accuracy']:.2f}%  "
            f"macro-F1 {m['macro_f1']:.3f}  top-{m['top_k']} {100 * m['top_k_accuracy']:.2f}%  "
            f"on {m['n_test']} images")


def samples_for(run: Run, data: str | None, classes: list[str]) -> tuple[list[Sample], str]:
    """The images a run is evaluated (or explained) on.

    Args:
        run: the run.
        data: ``None`` for the run's test split; a CSV manifest (its test split, or all of
            it when it has none) or a class-folder dataset.
        classes: the run's class names.

    Returns:
        The samples and a description of where they came from (for messages).

    Raises:
        LabtfError: unreadable dataset, or classes the run was not trained on.
    """
    if data is None:
        manifest = run.file("split.csv")
        samples = [s for s in read_manifest(manifest, validate=False).samples if s.split == "test"]
        return samples, f"test split of {manifest}"
    from labtf.manifest import scan_folder

    path = Path(data)
    if path.suffix.lower() == ".csv":
        index = read_manifest(path)
        samples = index.subset("test") or index.samples
    else:
        samples = scan_folder(path).samples
    unknown = sorted({s.label for s in samples} - set(classes))
    if unknown:
        raise LabtfError(f"{data} has class(es) {unknown} the run was not trained on; "
                         f"the run knows: {', '.join(classes)}")
    return samples, str(data)


def evaluate(run: Run | str | Path, data: str | None = None, batch_size: int = 32,
             k: int = 3) -> dict:
    """Evaluate a run and write its metrics and confusion files.

    Args:
        run: run folder.
        data: another dataset (folder or manifest); default: the run's test split.
        batch_size: prediction batch size.
        k: the k of top-k accuracy (capped at classes - 1).

    Returns:
        The metrics dict written to ``metrics.json``.

    Raises:
        LabtfError: missing run, no test images, classes the run does not know.
    """
    from labtf.plots import plot_confusion

    run = run if isinstance(run, Run) else Run.open(run)
    classes, meta = run.classes, run.meta
    samples, source = samples_for(run, data, classes)
    if not samples:
        raise LabtfError(f"no test images in {source}")
    model = run.load_model()
    probs = predict_samples(model, samples, classes, meta["image_size"], batch_size,
                            meta.get("resize", "crop"))
    y_true = np.array([classes.index(s.label) for s in samples])
    metrics = compute_metrics(y_true, probs, classes, k)
    metrics.update({"source": source, "backbone": meta["backbone"]})
    cm = np.array(metrics["confusion_matrix"])
    table = confusion_table(cm, classes)
    write_text(run.file("confusion.csv"), _csv(table))
    write_text(run.file("confusion.md"), _markdown(table))
    plot_confusion(cm, classes, run.file("confusion.png"),
                   f"{meta['backbone']}: {100 * metrics['accuracy']:.1f}% on {len(samples)} images")
    _write_predictions(run.file("predictions.csv"), samples, classes, probs)
    write_json(run.file("metrics.json"), metrics)
    log.debug(summary_line(metrics))
    return metrics


def _write_predictions(path: Path, samples: list[Sample], classes: list[str],
                       probs: np.ndarray) -> None:
    """predictions.csv (path,label,predicted,confidence), CSV-quoted: a file name may hold
    commas, quotes or newlines."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "label", "predicted", "confidence"])
    for s, row in zip(samples, probs):
        p = int(row.argmax())
        w.writerow([s.path, s.label, classes[p], f"{row[p]:.4f}"])
    write_text(path, buf.getvalue())
