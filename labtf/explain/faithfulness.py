"""Is a saliency map faithful to the model? ``labtf explain-eval``.

* Deletion / insertion AUC (RISE, Petsiuk et al. 2018): remove (set to the
  pixel that is 0 after the model's preprocessing, as RISE's reference code
  zeroes normalised inputs) or insert (into a blurred copy) pixels in the map's order, most salient first,
  and integrate the target-class probability. Good maps: low deletion, high
  insertion; each is shown beside the same score of a uniform random map.
* Cascading parameter randomization (Adebayo et al. 2018): re-draw the
  weights of the model from the top layer group down; a map that depends on
  the model changes, so its Spearman rho with the original map falls. A
  method *passes* when the mean rho is below :data:`SANITY_RHO` both after
  re-drawing the top group only (the class layer ``logits``: a map that
  ignores it does not explain the class) and after re-drawing every group.
  A randomized map that is constant (e.g. a Grad-CAM all killed by its ReLU)
  counts as rho 0.
* Data (label) randomization (Adebayo et al. 2018, sec. 3.2; optional,
  :mod:`labtf.explain.label_randomization`): rho between the maps of the run and
  of its twin trained on shuffled labels; below :data:`SANITY_RHO` passes.
* With masks (``MASK_DIR/NAME.png``, object > 0): pointing game (the map's
  peak within :data:`POINTING_TOLERANCE` px of the object) and the share of
  the map's energy inside the mask.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np

from labtf.errors import LabtfError

log = logging.getLogger(__name__)

SANITY_RHO = 0.5
POINTING_TOLERANCE = 15
#: Methods evaluated by default (full Score-CAM is too slow for a CPU batch).
DEFAULT_METHODS = ("gradcam", "gradcam++", "layercam", "faster-scorecam", "saliency",
                   "smoothgrad", "guided", "guided-gradcam")


def auc(curve: np.ndarray) -> float:
    """Area under a curve sampled evenly on [0, 1] (trapezoid rule)."""
    curve = np.asarray(curve, np.float64)
    return float(((curve[1:] + curve[:-1]) / 2).sum() / (len(curve) - 1))


def deletion_insertion(predict: Callable[[np.ndarray], np.ndarray], image: np.ndarray,
                       saliency: np.ndarray, target: int, steps: int = 16,
                       blur_sigma: float | None = None,
                       fill: np.ndarray | float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Deletion and insertion curves of one image and map.

    Args:
        predict: float32 batch (N, S, S, 3) 0..255 -> probabilities (N, C).
        image: (S, S, 3) in 0..255.
        saliency: (S, S) map; higher = more important (ties keep raster order).
        target: class index whose probability is tracked.
        steps: number of equal pixel chunks.
        blur_sigma: Gaussian sigma (px) of the insertion start; default S / 45.
        fill: the RGB value deleted pixels get.

    Returns:
        ``(deletion, insertion)``: probabilities at 0, 1/steps, ..., 1 of the pixels.
    """
    from scipy.ndimage import gaussian_filter

    h, w = saliency.shape
    image = image.astype(np.float32)
    sigma = blur_sigma if blur_sigma is not None else h / 45.0
    blurred = gaussian_filter(image, sigma=(sigma, sigma, 0))
    order = np.argsort(-saliency.ravel(), kind="stable")
    counts = np.linspace(0, h * w, steps + 1).round().astype(int)
    flat_img, flat_blur = image.reshape(-1, 3), blurred.reshape(-1, 3)
    batch = []
    for k in counts:
        sel = order[:k]
        d = flat_img.copy()
        d[sel] = fill
        i = flat_blur.copy()
        i[sel] = flat_img[sel]
        batch += [d.reshape(h, w, 3), i.reshape(h, w, 3)]
    probs = np.asarray(predict(np.stack(batch)))[:, target]
    return probs[0::2], probs[1::2]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps (0 when either is constant)."""
    from scipy.stats import spearmanr

    a, b = np.ravel(a), np.ravel(b)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a, b).statistic)


def layer_groups(model) -> list[tuple[str, list]]:
    """Weighted conv/dense layers grouped by name prefix (``block6d``, ``top``...), top first."""
    groups: dict[str, list] = {}
    for lyr in model.layers:
        if any("kernel" in v.path for v in lyr.weights):
            groups.setdefault(lyr.name.split("_")[0], []).append(lyr)
    return list(reversed(groups.items()))


def randomize_layers(layers: list, rng: np.random.Generator) -> None:
    """Re-draw kernels and biases (Gaussian, each variable's own mean/std); BatchNorm untouched."""
    for lyr in layers:
        for v in lyr.weights:
            if "kernel" in v.path or "bias" in v.path:
                old = np.asarray(v.numpy())
                v.assign(rng.normal(old.mean(), old.std() + 1e-6, old.shape).astype(old.dtype))


def randomization_test(explainer, x: np.ndarray, targets: list[int], methods: list[str],
                       seed: int = 0) -> dict[str, list[tuple[str, float]]]:
    """Cascading randomization; the explainer's weights are restored afterwards.

    Returns:
        method -> [(layer group randomized down to, mean Spearman rho), ...], top first.
    """
    rng = np.random.default_rng(seed)
    model = explainer.logits_model
    saved = model.get_weights()
    original = {m: explainer.maps(m, x, targets).maps for m in methods}
    curves: dict[str, list[tuple[str, float]]] = {m: [] for m in methods}
    try:
        for name, layers in layer_groups(model):
            randomize_layers(layers, rng)
            explainer.sync_guided()
            for m in methods:
                maps = explainer.maps(m, x, targets).maps
                rho = np.mean([spearman(a, b) for a, b in zip(original[m], maps)])
                curves[m].append((name, float(rho)))
            log.debug("randomized down to %s", name)
    finally:
        model.set_weights(saved)
        explainer.sync_guided()
    return curves


def mask_scores(saliency: np.ndarray, mask: np.ndarray,
                tolerance: int = POINTING_TOLERANCE) -> tuple[bool, float]:
    """Pointing-game hit (peak within ``tolerance`` px of the mask) and energy inside the mask."""
    from scipy.ndimage import distance_transform_edt

    dist = distance_transform_edt(~mask)
    peak = np.unravel_index(int(np.argmax(saliency)), saliency.shape)
    total = float(saliency.sum())
    energy = float(saliency[mask].sum() / total) if total > 0 else 0.0
    return bool(dist[peak] <= tolerance), energy


def load_mask(mask_dir: Path, image_path: str, size: int, resize: str) -> np.ndarray | None:
    """The mask of an image (same stem, any image suffix) as bool (S, S), or None."""
    from labtf.images import IMAGE_SUFFIXES, load_rgb, to_square

    for suffix in IMAGE_SUFFIXES:
        p = mask_dir / f"{Path(image_path).stem}{suffix}"
        if p.is_file():
            m = to_square(load_rgb(p), size, resize).max(axis=-1) > 127
            return m if m.any() else None
    return None


def evaluate_methods(explainer, images: np.ndarray, paths: list[str], methods: list[str],
                     steps: int = 16, mask_dir: Path | None = None, sanity_images: int = 6,
                     seed: int = 0, twin=None) -> dict:
    """All faithfulness scores for a batch of model inputs.

    Args:
        explainer: a :class:`labtf.explain.core.Explainer`.
        images: uint8 (N, S, S, 3) model inputs.
        paths: their files (for masks).
        methods: method names (``random`` is added as the baseline).
        steps: deletion/insertion steps.
        mask_dir: folder of object masks, or None.
        sanity_images: images used by the randomization test (0: skip it).
        seed: randomness of baseline and randomization.
        twin: Explainer of the run's shuffled-label twin (data randomization on every
            image), or None.

    Returns:
        ``{"n_images", "steps", "methods": {name: {...scores...}}, "randomization": {...}}``.
    """
    probs = explainer.predict(images)
    targets = [int(i) for i in probs.argmax(axis=1)]
    masks = ([load_mask(Path(mask_dir), p, explainer.image_size, explainer.resize) for p in paths]
             if mask_dir else [None] * len(paths))
    result: dict = {"n_images": len(images), "steps": steps, "methods": {},
                    "n_masks": sum(m is not None for m in masks)}
    original: dict[str, list[np.ndarray]] = {}     # kept for the label randomization test
    for method in ["random", *methods]:
        dels, inss, hits, energy, secs = [], [], [], [], []
        for img, t, mask in zip(images, targets, masks):
            t0 = time.perf_counter()
            m = explainer.maps(method, img[None], [t]).maps[0]
            secs.append(time.perf_counter() - t0)
            if twin is not None and method != "random":
                original.setdefault(method, []).append(m)
            d, i = deletion_insertion(explainer.predict, img, m, t, steps,
                                      fill=explainer.baseline_pixel)
            dels.append(auc(d))
            inss.append(auc(i))
            if mask is not None:
                hit, en = mask_scores(m, mask)
                hits.append(hit)
                energy.append(en)
        result["methods"][method] = {
            "deletion": float(np.mean(dels)), "insertion": float(np.mean(inss)),
            "seconds_per_image": float(np.median(secs)),
            "pointing": float(np.mean(hits)) if hits else None,
            "energy": float(np.mean(energy)) if energy else None}
        log.info("%s: deletion %.3f insertion %.3f", method, np.mean(dels), np.mean(inss))
    if sanity_images > 0:
        n = min(sanity_images, len(images))
        curves = randomization_test(explainer, images[:n].astype(np.float32), targets[:n],
                                    list(methods), seed)
        result["randomization"] = {"n_images": n, "curves": curves}
        for m, curve in curves.items():
            top = curve[0][1] if curve else float("nan")
            full = curve[-1][1] if curve else float("nan")
            result["methods"][m]["rho_top_random"] = top
            result["methods"][m]["rho_full_random"] = full
            result["methods"][m]["passes_randomization"] = bool(max(top, full) < SANITY_RHO)
    if twin is not None:
        from labtf.explain.label_randomization import label_randomization_test

        rhos = label_randomization_test(twin, images.astype(np.float32), targets, original)
        for m, rho in rhos.items():
            result["methods"][m]["rho_labels_random"] = rho
            result["methods"][m]["passes_label_randomization"] = bool(rho < SANITY_RHO)
    rnd = result["methods"]["random"]
    for m, r in result["methods"].items():
        r["deletion_beats_random"] = bool(r["deletion"] < rnd["deletion"]) if m != "random" else None
        r["insertion_beats_random"] = (bool(r["insertion"] > rnd["insertion"])
                                       if m != "random" else None)
    return result


def _f(v, fmt: str = "{:.3f}") -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    return fmt.format(v)


def table_markdown(result: dict) -> str:
    """The faithfulness table (and the randomization curves) as Markdown."""
    rnd = result["methods"]["random"]
    lines = [f"Faithfulness on {result['n_images']} image(s), {result['steps']} steps; "
             f"random map: deletion {rnd['deletion']:.3f}, insertion {rnd['insertion']:.3f}.", "",
             "| method | deletion AUC (lower better) | random | beats random | insertion AUC "
             "(higher better) | random | beats random | rho, top layer randomized | "
             "rho, all layers randomized | "
             f"passes randomization (both rho < {SANITY_RHO}) | rho, labels shuffled (passes "
             f"< {SANITY_RHO}) | pointing game | energy in mask | s / image |", "|" + "---|" * 14]
    for m, r in result["methods"].items():
        if m == "random":
            continue
        lines.append(f"| {m} | {_f(r['deletion'])} | {_f(rnd['deletion'])} | "
                     f"{_f(r['deletion_beats_random'])} | {_f(r['insertion'])} | "
                     f"{_f(rnd['insertion'])} | {_f(r['insertion_beats_random'])} | "
                     f"{_f(r.get('rho_top_random'), '{:.2f}')} | "
                     f"{_f(r.get('rho_full_random'), '{:.2f}')} | "
                     f"{_f(r.get('passes_randomization'))} | "
                     f"{_f(r.get('rho_labels_random'), '{:.2f}')} | {_f(r['pointing'], '{:.2f}')} | "
                     f"{_f(r['energy'], '{:.2f}')} | {_f(r['seconds_per_image'], '{:.2f}')} |")
    failing = [m for m, r in result["methods"].items() if m != "random" and not all(
        v is not False for v in (r["deletion_beats_random"], r["insertion_beats_random"],
                                 r.get("passes_randomization"),
                                 r.get("passes_label_randomization")))]
    lines += ["", "Fails at least one check: " + (", ".join(failing) if failing else "none") + "."]
    if "randomization" in result:
        curves = result["randomization"]["curves"]
        names = [g for g, _ in next(iter(curves.values()))] if curves else []
        lines += ["", f"Cascading randomization (top layer group first; mean Spearman rho over "
                  f"{result['randomization']['n_images']} image(s)):", "",
                  "| method | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
        lines += [f"| {m} | " + " | ".join(f"{r:.2f}" for _, r in c) + " |"
                  for m, c in curves.items()]
    if "label_randomization" in result:
        lr = result["label_randomization"]
        fit = lr["fit_accuracy"]
        lines += ["", f"Shuffled-label twin ({lr['run']}): fits its shuffled training labels to "
                  f"{_f(fit, '{:.1%}') if fit is not None else '-'}; test accuracy "
                  f"{lr['test_accuracy']:.1%} (chance {lr['chance']:.1%})."]
    if not result.get("n_masks"):
        lines += ["", "No masks given: pointing game and energy not measured."]
    return "\n".join(lines) + "\n"


def explain_eval(run_path, data: str | None = None, methods: list[str] | None = None,
                 mask_dir: str | None = None, steps: int = 16, limit: int | None = None,
                 sanity_images: int = 6, out: str | None = None, seed: int = 0,
                 label_randomization: str | None = None) -> dict:
    """Evaluate map faithfulness for a run; writes ``explain_eval.md`` / ``.json``.

    Args:
        run_path: run folder.
        data: dataset (folder or manifest); default the run's test split.
        methods: method names; default :data:`DEFAULT_METHODS`.
        mask_dir: folder of object masks named like the images.
        steps: deletion/insertion steps.
        limit: evaluate at most this many images (the first ones).
        sanity_images: images for the randomization test (0 skips it).
        out: output folder (default: the run folder).
        seed: randomness of baseline and randomization.
        label_randomization: folder of the run's shuffled-label twin, trained there
            first unless finished (:mod:`labtf.explain.label_randomization`); None skips it.

    Returns:
        The result dict (also written as JSON).

    Raises:
        LabtfError: missing run, no images, unknown method, missing mask folder.
    """
    from labtf.evaluation import _samples_for
    from labtf.explain.core import Explainer, check_method
    from labtf.images import BadImage
    from labtf.run import Run, write_json, write_text

    methods = list(methods or DEFAULT_METHODS)
    for m in methods:
        check_method(m)
    if mask_dir and not Path(mask_dir).is_dir():
        raise LabtfError(f"mask folder {mask_dir} does not exist")
    run = Run.open(run_path)
    samples, source = _samples_for(run, data, run.classes)
    samples = samples[:limit] if limit else samples
    if not samples:
        raise LabtfError(f"no images in {source}")
    ex = Explainer.from_run(run, seed=seed)
    imgs, paths, labels = [], [], []
    for s in samples:
        try:
            imgs.append(ex.load(s.path))
            paths.append(s.path)
            labels.append(s.label)
        except BadImage as exc:
            log.warning("skipped: %s", exc)
    twin = None
    if label_randomization:
        from labtf.explain.label_randomization import label_randomized_run

        twin_run = label_randomized_run(run, label_randomization, seed)
        twin = Explainer.from_run(twin_run, layer=ex.layer, seed=seed)
    images = np.stack(imgs)
    result = evaluate_methods(ex, images, paths, methods, steps,
                              Path(mask_dir) if mask_dir else None, sanity_images, seed, twin)
    result.update({"source": source, "layer": ex.layer})
    if twin is not None:
        truth = np.array([run.classes.index(lab) if lab in run.classes else -1 for lab in labels])
        hits = twin.predict(images).argmax(axis=1) == truth
        result["label_randomization"] = {
            "run": str(twin_run.path), "fit_accuracy": twin_run.meta.get("kept_epoch", {}).get("accuracy"),
            "test_accuracy": float(hits.mean()), "chance": 1 / len(run.classes)}
    folder = Path(out) if out else run.path
    write_json(folder / "explain_eval.json", result)
    write_text(folder / "explain_eval.md", table_markdown(result))
    return result
