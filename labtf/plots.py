"""PNG pictures: training curves and the confusion-matrix heat map (matplotlib, Agg)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)
    return path


def plot_history(rows: list[dict], path: Path) -> Path:
    """Loss and accuracy per epoch (train and val), with the stage boundary marked."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    epochs = [r["epoch"] for r in rows]
    for ax, key in zip(axes, ("loss", "accuracy")):
        for prefix, style in (("", "-"), ("val_", "--")):
            ys = [r.get(prefix + key) for r in rows]
            if any(y is not None for y in ys):
                ax.plot(epochs, [np.nan if y is None else y for y in ys], style, marker="o",
                        label=(prefix + key))
        switch = [r["epoch"] for r in rows if r["stage"] == 2]
        if switch:   # labelled above the plot area, where no curve or legend is
            ax.axvline(switch[0] - 0.5, color="grey", lw=0.8, ls=":")
            ax.text(switch[0] - 0.5, 1.01, "fine-tune \u2192", transform=ax.get_xaxis_transform(),
                    ha="left", va="bottom", fontsize=8, color="dimgrey")
        ax.set_xlabel("epoch")
        ax.set_title(key, pad=14)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2,
                  frameon=False)
    fig.tight_layout()
    path = _save(fig, path)
    plt.close(fig)
    return path


def plot_confusion(cm: np.ndarray, classes: list[str], path: Path, title: str = "") -> Path:
    """Row-normalised confusion heat map with raw counts written in the cells."""
    plt = _plt()
    n = len(classes)
    rows = cm.sum(axis=1, keepdims=True).clip(min=1)
    norm = cm / rows
    side = max(4.5, 0.55 * n + 2.5)
    fig, ax = plt.subplots(figsize=(side, side * 0.85))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), [str(i + 1) for i in range(n)])
    ax.set_yticks(range(n), [f"{c} ({i + 1})" for i, c in enumerate(classes)])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the row")
    fig.tight_layout()
    path = _save(fig, path)
    plt.close(fig)
    return path
