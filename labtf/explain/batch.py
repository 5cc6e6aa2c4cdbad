"""``labtf explain``: maps, overlays, contact sheets and poster panels for a batch of files.

Per image ``NAME``: ``NAME_METHOD.npy`` (float32 (S, S) map in 0..1),
``NAME_METHOD.png`` (overlay with label and confidence) and, with
``panel=True``, ``NAME_panel.png`` (image | Grad-CAM | Guided Backprop |
Guided Grad-CAM for the top class and the chosen or runner-up class).
``sheet_METHOD.png`` shows the first :data:`SHEET_TILES` images, and
``sheet_METHOD_2.png``... the next ones. Images stream through in batches
(one progress line per batch); a bad file gives a per-file error and the rest
are explained. Existing files are never overwritten.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from labtf.errors import LabtfError
from labtf.explain.stream import DEFAULT_BATCH_SIZE, image_batches

log = logging.getLogger(__name__)

#: Contact-sheet columns, and tiles per sheet (a sheet is written every SHEET_TILES images).
SHEET_COLUMNS, SHEET_TILES = 6, 60


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


def _sheet_paths(out: Path, method: str, n_images: int) -> list[Path]:
    n = max(1, -(-n_images // SHEET_TILES))
    return [out / (f"sheet_{method}.png" if k == 0 else f"sheet_{method}_{k + 1}.png")
            for k in range(n)]


def explain_files(run_path: str | os.PathLike, images: list[str], *, method: str = "gradcam",
                  class_name: str | None = None, layer: str | None = None,
                  out: str | os.PathLike = "explanations", panel: bool = False,
                  batch_size: int = DEFAULT_BATCH_SIZE) -> tuple[list[ExplainResult], list[Path]]:
    """Explain image files with a run, ``batch_size`` images at a time.

    Args:
        run_path: run folder.
        images: image files.
        method: a key of :data:`labtf.explain.registry.METHODS`.
        class_name: explain this class instead of the top prediction.
        layer: CAM target layer instead of the run's ``cam_layer``.
        out: output folder (created; existing files in it are never overwritten).
        panel: also write the poster panel per image.
        batch_size: images per batch (memory grows with it, not with the number of images).

    Returns:
        One :class:`ExplainResult` per input, in order (``error`` set for bad files), and
        the contact sheets written.

    Raises:
        LabtfError: missing run, unknown method/class/layer, bad batch size, or outputs
            that already exist.
    """
    from labtf.explain.core import Explainer, Explanation, resolve_class
    from labtf.explain.registry import check_method
    from labtf.explain.render import explanation_tile, grid, poster_panel, save_npy, save_png
    from labtf.run import Run

    check_method(method)
    if batch_size < 1:
        raise LabtfError(f"--batch-size must be at least 1, got {batch_size}")
    run = Run.open(run_path)
    target = resolve_class(run.classes, class_name) if class_name else None
    out = Path(out)
    plan = _targets(images, method, out, panel)
    sheets = _sheet_paths(out, method, len(images))
    clash = [p for paths in plan.values() for p in paths if p.exists()]
    clash += [p for p in sheets if p.exists()]
    if clash:
        raise LabtfError(f"{out} already holds {clash[0].name} (and {len(clash) - 1} more "
                         "output file(s)); choose a new --out folder or remove them")
    ex = Explainer.from_run(run, layer)
    results: list[ExplainResult | None] = [None] * len(images)
    tiles: list = []
    written_sheets: list[Path] = []

    def bad(i: int, message: str) -> None:
        results[i] = ExplainResult(images[i], [], error=message)

    for idx, x in image_batches(ex, images, batch_size, "explain", on_error=bad):
        probs = ex.predict(x)
        top = probs.argmax(axis=1)
        targets = [int(t) if target is None else target for t in top]
        res = ex.maps(method, x, targets)
        maps = res.maps
        for j, i in enumerate(idx):
            path, t = images[i], targets[j]
            npy, png, *rest = plan[path]
            top_j = int(top[j])
            e = Explanation(method, maps[j], t, run.classes[t], float(probs[j, t]),
                            run.classes[top_j], float(probs[j, top_j]), ex.layer,
                            None if res.rgb is None else res.rgb[j])
            tile = explanation_tile(x[j], e, method)   # guided maps as gradient images
            save_npy(maps[j].astype(np.float32), npy)
            save_png(tile, png)
            written = [npy, png]
            if panel:
                second = class_name or run.classes[int(np.argsort(-probs[j])[1])]
                save_png(poster_panel(ex, x[j], [None, second]), rest[0])
                written.append(rest[0])
            tiles.append(tile)
            results[i] = ExplainResult(path, written, run.classes[t], float(probs[j, t]))
            if len(tiles) == SHEET_TILES:
                written_sheets.append(save_png(grid(tiles, SHEET_COLUMNS), sheets[len(written_sheets)]))
                tiles = []
    if tiles:
        sheet = sheets[len(written_sheets)]
        written_sheets.append(save_png(grid(tiles, min(SHEET_COLUMNS, len(tiles))), sheet))
    return [r for r in results if r is not None], written_sheets
