"""Is a saliency map faithful to the model? ``labtf explain-eval``.

* Deletion / insertion AUC (RISE, Petsiuk et al. 2018): remove (set to the
  pixel that is 0 after the model's preprocessing, as RISE's reference code
  zeroes normalised inputs) or insert (into a blurred copy) pixels in the map's order, most salient first,
  and integrate the target-class probability. Good maps: low deletion, high
  insertion; each is shown beside the same score of a uniform random map.
* Cascading parameter randomization (Adebayo et al. 2018): re-draw the
  weights of the model from the top layer group down; a map that depends on
  the model changes, so its Spearman rho with the original map falls. A
  method *passes* when the mean rho is below
  :data:`labtf.explain.metrics.SANITY_RHO` both after
  re-drawing the top group only (the class layer ``logits``: a map that
  ignores it does not explain the class) and after re-drawing every group.
  A randomized map that is constant (e.g. a Grad-CAM all killed by its ReLU)
  counts as rho 0.
* Data (label) randomization (Adebayo et al. 2018, sec. 3.2; optional,
  :mod:`labtf.explain.label_randomization`): rho between the maps of the run and
  of its twin trained on shuffled labels; below :data:`SANITY_RHO` passes.
* With masks (``MASK_DIR/NAME.png``, object > 0): pointing game (the map's
  peak within :data:`~labtf.explain.metrics.POINTING_TOLERANCE` px of the
  object) and the share of the map's energy inside the mask, on all images, on
  the correct predictions and per class.

Images stream through in batches (:mod:`labtf.explain.stream`): only scalars are
kept per image, so memory does not grow with the number of images.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from labtf.errors import LabtfError
from labtf.explain.label_randomization import label_randomization_rhos
from labtf.explain.metrics import (SANITY_RHO, ScoreTally, auc, deletion_insertion_batch,
                                   load_mask, mask_scores, spearman)
from labtf.explain.registry import BASELINE, check_method, default_eval_methods
from labtf.explain.stream import DEFAULT_BATCH_SIZE, even_sample, image_batches

log = logging.getLogger(__name__)


@dataclass
class ExplainEvalOptions:
    """Options of ``labtf explain-eval`` (:func:`explain_eval`), checked when built.

    Attributes:
        data: dataset (folder or manifest); None: the run's test split.
        methods: method names; None or empty: the registry's default set
            (:func:`labtf.explain.registry.default_eval_methods`).
        mask_dir: folder of object masks named like the images, or None.
        steps: deletion/insertion steps.
        limit: evaluate at most this many images, drawn evenly across the classes
            with ``seed`` (:func:`labtf.explain.stream.even_sample`); None: all.
        sanity_images: images for the parameter randomization test (0 skips it).
        batch_size: images per batch (memory grows with it, not with the image count).
        seed: randomness of the ``limit`` draw, the baseline and the randomization.
        out: output folder; None: the run folder.
        label_randomization: folder of the run's shuffled-label twin, trained there
            first unless finished (:mod:`labtf.explain.label_randomization`); None skips it.
    """

    data: str | None = None
    methods: list[str] | None = None
    mask_dir: str | None = None
    steps: int = 16
    limit: int | None = None
    sanity_images: int = 6
    batch_size: int = DEFAULT_BATCH_SIZE
    seed: int = 0
    out: str | None = None
    label_randomization: str | None = None

    def __post_init__(self) -> None:
        self.methods = list(self.methods) if self.methods else default_eval_methods()
        self.validate()

    def validate(self) -> None:
        """Raise LabtfError naming the first bad option (unknown methods list the valid ones)."""
        for m in self.methods:
            check_method(m)
        if self.mask_dir and not Path(self.mask_dir).is_dir():
            raise LabtfError(f"mask folder {self.mask_dir} does not exist")
        for name, v in (("--batch-size", self.batch_size), ("--limit", self.limit),
                        ("--steps", self.steps)):
            if v is not None and v < 1:
                raise LabtfError(f"{name} must be at least 1, got {v}")

    @classmethod
    def from_dict(cls, d: dict) -> "ExplainEvalOptions":
        """Build from a dict, refusing unknown keys with the list of valid ones."""
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise LabtfError(f"unknown explain-eval option key(s) {unknown}; valid keys: "
                             f"{', '.join(valid)}")
        return cls(**d)


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


def randomization_test(explainer, x: np.ndarray, targets: list[int], methods: list[str], *,
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


def _masks(explainer, mask_dir: Path | None, paths: list[str]) -> list[np.ndarray | None]:
    if mask_dir is None:
        return [None] * len(paths)
    return [load_mask(mask_dir, p, explainer.image_size, explainer.resize) for p in paths]


def evaluate_methods(explainer, paths: list[str], labels: list[int], methods: list[str], *,
                     steps: int = 16, mask_dir: Path | None = None, sanity_images: int = 6,
                     seed: int = 0, twin=None, batch_size: int = DEFAULT_BATCH_SIZE) -> dict:
    """All faithfulness scores for image files, streamed in batches.

    Args:
        explainer: a :class:`labtf.explain.core.Explainer`.
        paths: image files (unreadable ones are skipped with a warning).
        labels: true class index per file (for the scores on correct predictions and per class).
        methods: method names (the registry's ``BASELINE``, ``random``, is added).
        steps: deletion/insertion steps.
        mask_dir: folder of object masks, or None.
        sanity_images: images, spread evenly over the classes, used by the parameter
            randomization test (0: skip it).
        seed: randomness of baseline and randomization.
        twin: Explainer of the run's shuffled-label twin (data randomization on every
            image), or None.
        batch_size: images per batch; the scores do not depend on it.

    Returns:
        ``{"n_images", "n_correct", "accuracy", "steps", "n_masks", "methods": {name:
        {...scores...}}, "randomization": {...}}`` (+ ``"twin_accuracy"`` with a twin).
    """
    names = [BASELINE, *methods]
    tallies = {m: ScoreTally(explainer.classes) for m in names}
    rhos: dict[str, list[float]] = {m: [] for m in methods}
    done: list[int] = []
    n_correct = n_masks = twin_hits = 0
    for idx, imgs in image_batches(explainer, paths, batch_size, "explain-eval"):
        x = imgs.astype(np.float32)
        targets = [int(i) for i in explainer.predict(x).argmax(axis=1)]
        truth = [labels[i] for i in idx]
        correct = [t == y for t, y in zip(targets, truth)]
        masks = _masks(explainer, mask_dir, [paths[i] for i in idx])
        done += idx
        n_correct += sum(correct)
        n_masks += sum(m is not None for m in masks)
        if twin is not None:
            twin_hits += int((twin.predict(x).argmax(axis=1) == np.asarray(truth)).sum())
        for method in names:
            t0 = time.perf_counter()
            maps = explainer.maps(method, x, targets).maps
            tallies[method].seconds.append((time.perf_counter() - t0) / len(x))
            dels, inss = deletion_insertion_batch(explainer.predict, x, maps, targets, steps,
                                                  fill=explainer.baseline_pixel)
            for j, mask in enumerate(masks):
                hit, energy = mask_scores(maps[j], mask) if mask is not None else (None, None)
                tallies[method].add(truth[j], correct[j], auc(dels[j]), auc(inss[j]), hit, energy)
            if twin is not None and method != BASELINE:
                rhos[method] += label_randomization_rhos(twin, x, targets, {method: maps})[method]
    if not done:
        raise LabtfError("none of the images could be read")
    result: dict = {"n_images": len(done), "n_correct": n_correct,
                    "accuracy": n_correct / len(done), "steps": steps, "n_masks": n_masks,
                    "methods": {m: t.summary() for m, t in tallies.items()}}
    for m in names:
        r = result["methods"][m]
        log.info("%s: deletion %.3f insertion %.3f", m, r["deletion"], r["insertion"])
    if sanity_images > 0:
        pick = [done[i] for i in even_sample([str(labels[i]) for i in done], sanity_images, seed)]
        x = np.stack([explainer.load(paths[i]) for i in pick]).astype(np.float32)
        targets = [int(i) for i in explainer.predict(x).argmax(axis=1)]
        curves = randomization_test(explainer, x, targets, list(methods), seed=seed)
        result["randomization"] = {"n_images": len(pick), "curves": curves}
        for m, curve in curves.items():
            top = curve[0][1] if curve else float("nan")
            full = curve[-1][1] if curve else float("nan")
            result["methods"][m]["rho_top_random"] = top
            result["methods"][m]["rho_full_random"] = full
            result["methods"][m]["passes_randomization"] = bool(max(top, full) < SANITY_RHO)
    if twin is not None:
        result["twin_accuracy"] = twin_hits / len(done)
        for m, values in rhos.items():
            rho = float(np.mean(values))
            log.info("label randomization %s: rho %.2f", m, rho)
            result["methods"][m]["rho_labels_random"] = rho
            result["methods"][m]["passes_label_randomization"] = bool(rho < SANITY_RHO)
    rnd = result["methods"][BASELINE]
    for m, r in result["methods"].items():
        r["deletion_beats_random"] = bool(r["deletion"] < rnd["deletion"]) if m != BASELINE else None
        r["insertion_beats_random"] = (bool(r["insertion"] > rnd["insertion"])
                                       if m != BASELINE else None)
    return result


def _f(v, fmt: str = "{:.3f}") -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    return fmt.format(v)


def table_markdown(result: dict) -> str:
    """The faithfulness table (and the randomization curves) as Markdown."""
    rnd = result["methods"][BASELINE]
    lines = [f"Faithfulness on {result['n_images']} image(s) ({result['n_correct']} predicted "
             f"correctly), {result['steps']} steps; random map: deletion {rnd['deletion']:.3f}, "
             f"insertion {rnd['insertion']:.3f}.", "",
             "| method | deletion AUC (lower better) | random | beats random | insertion AUC "
             "(higher better) | random | beats random | rho, top layer randomized | "
             "rho, all layers randomized | "
             f"passes randomization (both rho < {SANITY_RHO}) | rho, labels shuffled (passes "
             f"< {SANITY_RHO}) | pointing game | pointing, correct predictions | energy in mask | "
             "energy, correct predictions | s / image |", "|" + "---|" * 16]
    for m, r in result["methods"].items():
        if m == BASELINE:
            continue
        lines.append(f"| {m} | {_f(r['deletion'])} | {_f(rnd['deletion'])} | "
                     f"{_f(r['deletion_beats_random'])} | {_f(r['insertion'])} | "
                     f"{_f(rnd['insertion'])} | {_f(r['insertion_beats_random'])} | "
                     f"{_f(r.get('rho_top_random'), '{:.2f}')} | "
                     f"{_f(r.get('rho_full_random'), '{:.2f}')} | "
                     f"{_f(r.get('passes_randomization'))} | "
                     f"{_f(r.get('rho_labels_random'), '{:.2f}')} | {_f(r['pointing'], '{:.2f}')} | "
                     f"{_f(r['pointing_correct'], '{:.2f}')} | {_f(r['energy'], '{:.2f}')} | "
                     f"{_f(r['energy_correct'], '{:.2f}')} | {_f(r['seconds_per_image'], '{:.2f}')} |")
    failing = [m for m, r in result["methods"].items() if m != BASELINE and not all(
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
    else:
        lines += ["", *_per_class_table(result)]
    return "\n".join(lines) + "\n"


def _per_class_table(result: dict) -> list[str]:
    """Pointing game / energy in mask per true class (all its images with a mask)."""
    methods = [m for m in result["methods"] if m != BASELINE]
    classes = list(next(iter(result["methods"].values()))["per_class"])
    lines = ["Pointing game / energy in mask per class (all images of the class that have a mask):",
             "", "| class | images with mask | " + " | ".join(methods) + " |",
             "|" + "---|" * (len(methods) + 2)]
    for c in classes:
        cells = [f"{_f(result['methods'][m]['per_class'][c]['pointing'], '{:.2f}')} / "
                 f"{_f(result['methods'][m]['per_class'][c]['energy'], '{:.2f}')}" for m in methods]
        n = result["methods"][methods[0] if methods else BASELINE]["per_class"][c]["n_masks"]
        lines.append(f"| {c} | {n} | " + " | ".join(cells) + " |")
    return lines


def explain_eval(run_path, *, options: ExplainEvalOptions | None = None, **overrides) -> dict:
    """Evaluate map faithfulness for a run; writes ``explain_eval.md`` / ``.json``.

    Args:
        run_path: run folder.
        options: the options; None: the defaults.
        **overrides: option fields (:class:`ExplainEvalOptions`) replacing those of ``options``.

    Returns:
        The result dict (also written as JSON), plus ``written``: the two files' paths.

    Raises:
        LabtfError: unknown option, missing run, no images, unknown method, missing mask
            folder, bad sizes.
    """
    from labtf.evaluation import samples_for
    from labtf.explain.core import Explainer
    from labtf.run import Run, write_json, write_text

    if options is None or overrides:
        base = dataclasses.asdict(options) if options is not None else {}
        options = ExplainEvalOptions.from_dict({**base, **overrides})
    o = options
    run = Run.open(run_path)
    samples, source = samples_for(run, o.data, run.classes)
    samples = [samples[i] for i in even_sample([s.label for s in samples], o.limit, o.seed)]
    if not samples:
        raise LabtfError(f"no images in {source}")
    ex = Explainer.from_run(run, seed=o.seed)
    twin = twin_run = None
    if o.label_randomization:
        from labtf.explain.label_randomization import label_randomized_run

        twin_run = label_randomized_run(run, o.label_randomization, o.seed)
        twin = Explainer.from_run(twin_run, layer=ex.layer, seed=o.seed)
    result = evaluate_methods(ex, [s.path for s in samples],
                              [run.classes.index(s.label) for s in samples], o.methods,
                              steps=o.steps, mask_dir=Path(o.mask_dir) if o.mask_dir else None,
                              sanity_images=o.sanity_images, seed=o.seed, twin=twin,
                              batch_size=o.batch_size)
    result.update({"source": source, "layer": ex.layer, "limit": o.limit, "seed": o.seed})
    if twin_run is not None:
        result["label_randomization"] = {
            "run": str(twin_run.path),
            "fit_accuracy": twin_run.meta.get("kept_epoch", {}).get("accuracy"),
            "test_accuracy": result.pop("twin_accuracy"), "chance": 1 / len(run.classes)}
    folder = Path(o.out) if o.out else run.path
    written = [write_json(folder / "explain_eval.json", result),
               write_text(folder / "explain_eval.md", table_markdown(result))]
    return {**result, "written": [str(p) for p in written]}
