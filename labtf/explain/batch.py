"""``labtf explain``: maps, overlays, contact sheet and poster panels for a batch of files.

Per image ``NAME``: ``NAME_METHOD.npy`` (float32 (S, S) map in 0..1),
``NAME_METHOD.png`` (overlay with label and confidence) and, with
``panel=True``, ``NAME_panel.png`` (image | Grad-CAM | Guided Backprop |
Guided Grad-CAM for the top class and the chosen or runner-up class). One
``sheet_METHOD.png`` shows the whole batch. A bad file gives a per-file error
and the rest are explained. Existing files are never overwritten.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from labtf.errors import LabtfError

log = logging.getLogger(__name__)

#: Contact-sheet columns.
SHEET_COLUMNS = 6


@dataclass
class ExplainResult:
    """What happened to one input file."""

    path: str
    outputs: list[Path]
    label: str = ""
    confidence: float = 0.0
    error: str = ""


def _targets(images: list[str], method: str, out: Path, panel: bool) -> dict[str, list[Path]]:
    from labtf.explain.core import output_stem

    used: set[str] = set()
    plan = {}
    for p in images:
        stem = output_stem(p, used)
        names = [f"{stem}_{method}.npy", f"{stem}_{method}.png"]
        names += [f"{stem}_panel.png"] if panel else []
        plan[p] = [out / n for n in names]
    return plan


def explain_files(run_path: str | os.PathLike, images: list[str], method: str = "gradcam",
                  class_name: str | None = None, layer: str | None = None,
                  out: str | os.PathLike = "explanations", panel: bool = False) -> list[ExplainResult]:
    """Explain image files with a run.

    Args:
        run_path: run folder.
        images: image files.
        method: a key of :data:`labtf.explain.core.METHODS`.
        class_name: explain this class instead of the top prediction.
        layer: CAM target layer instead of the run's ``cam_layer``.
        out: output folder (created; existing files in it are never overwritten).
        panel: also write the poster panel per image.

    Returns:
        One :class:`ExplainResult` per input, in order (``error`` set for bad files).

    Raises:
        LabtfError: missing run, unknown method/class/layer, or outputs that already exist.
    """
    from labtf.explain.core import Explainer, check_method, resolve_class
    from labtf.explain.render import grid, labelled_overlay, poster_panel, save_npy, save_png
    from labtf.images import BadImage
    from labtf.run import Run

    check_method(method)
    run = Run.open(run_path)
    if class_name:
        resolve_class(run.classes, class_name)
    out = Path(out)
    plan = _targets(images, method, out, panel)
    sheet_path = out / f"sheet_{method}.png"
    clash = [p for paths in plan.values() for p in paths if p.exists()]
    clash += [sheet_path] if sheet_path.exists() else []
    if clash:
        raise LabtfError(f"{out} already holds {clash[0].name} (and {len(clash) - 1} more "
                         "output file(s)); choose a new --out folder or remove them")
    ex = Explainer.from_run(run, layer)
    results, tiles = [], []
    for path in images:
        try:
            img = ex.load(path)
        except BadImage as exc:
            log.debug("skipping %s", path)
            results.append(ExplainResult(path, [], error=str(exc)))
            continue
        e = ex.explain(img, method, class_name)
        npy, png, *rest = plan[path]
        tile = labelled_overlay(img, e.map, e.class_name, e.confidence, method)
        save_npy(e.map.astype(np.float32), npy)
        save_png(tile, png)
        written = [npy, png]
        if panel:
            second = class_name or _runner_up(ex, img)
            save_png(poster_panel(ex, img, [None, second]), rest[0])
            written.append(rest[0])
        tiles.append(tile)
        results.append(ExplainResult(path, written, e.class_name, e.confidence))
    if tiles:
        save_png(grid(tiles, min(SHEET_COLUMNS, len(tiles))), sheet_path)
        log.info("%d map(s) and %s written to %s", len(tiles), sheet_path.name, out)
    return results


def _runner_up(ex, img: np.ndarray) -> str:
    probs = ex.predict(img[None])[0]
    return ex.classes[int(np.argsort(-probs)[1])]
