"""Recipe search on the photo-scene benchmark (datasets/build_scenes.py): accuracy and localisation.

Each recipe trains one run per seed on ``SCENES/manifest.csv`` (its own
object- and background-disjoint split), in a child process timed with
``/usr/bin/time -v`` (train seconds, peak RSS), then scores the test split:
top-1, balanced top-1, macro-F1, and the class activation map's pointing game
(peak within 15 px of the object mask, at the model's input size) on all and
on correct predictions, plus the share of the map's energy inside the mask.
The map is labtf's on-device CAM (= Grad-CAM of the logit for labtf's GAP ->
Dense head) of the predicted class at the run's CAM layer, upsampled
bilinearly; ``cam14`` scores Grad-CAM at the last 14 x 14 layer instead;
``tta`` averages the probabilities of the image and its mirror image.

The reference ``probe`` is a logistic regression on frozen ImageNet features
(GAP of the backbone, no augmentation) of train+val; its map is the CAM with
the regression's weights.

Usage::

    python datasets/build_scenes.py --out scenes
    python benchmarks/scenes.py scenes --recipes probe lpft --seeds 0 --out runs/scenes

Results are appended to ``benchmarks/results/scenes.md`` (with date, machine,
load average and the command) unless ``--no-record``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
RESULTS = HERE / "results" / "scenes.md"
TOLERANCE = 15

#: Recipe name -> TrainConfig fields (besides data/seed). ``probe`` is not trained by labtf.
RECIPES: dict[str, dict] = {
    "probe": {},
    # labtf train's defaults before this benchmark existed
    "old_defaults": {"epochs": 8, "fine_tune_epochs": 4, "early_stopping_patience": 3,
                     "resize": "crop", "cache_views": 0},
    # the demo's settings before this benchmark existed (20 + 10, letterbox, patience 5)
    "old_demo": {"epochs": 20, "fine_tune_epochs": 10, "early_stopping_patience": 5,
                 "resize": "pad", "cache_views": 0},
    # LP-FT on the cached trunk: head to convergence, then the top 2 blocks. The scenes are
    # square, so crop, pad and squash give the same input; "crop" keeps one trunk cache for
    # every lpft variant of a seed.
    "lpft": {"resize": "crop", "epochs": 30, "fine_tune_epochs": 10, "early_stopping_patience": 5,
             "cache_views": 8},
    "lpft_strong": {"resize": "crop", "epochs": 30, "fine_tune_epochs": 10, "early_stopping_patience": 5,
                    "cache_views": 8, "augment_preset": "strong"},
    "lpft_deep_cosine": {"resize": "crop", "epochs": 30, "fine_tune_epochs": 10, "early_stopping_patience": 5,
                         "cache_views": 8, "fine_tune_blocks": 3, "lr_schedule": "cosine",
                         "fine_tune_learning_rate": 3e-4},
    # labtf train's default since this benchmark (TrainConfig): LP-FT, cosine stage 2 at 3e-4
    "lpft_cosine": {"resize": "crop", "epochs": 30, "fine_tune_epochs": 10, "early_stopping_patience": 5,
                    "cache_views": 8, "lr_schedule": "cosine", "fine_tune_learning_rate": 3e-4},
    "lpft_1block": {"resize": "crop", "epochs": 30, "fine_tune_epochs": 10,
                    "early_stopping_patience": 5, "cache_views": 8, "fine_tune_blocks": 1},
    "lpft_288": {"resize": "crop", "epochs": 30, "fine_tune_epochs": 10,
                 "early_stopping_patience": 5, "cache_views": 8, "image_size": 288},
    "lpft_lite2": {"resize": "crop", "epochs": 30, "fine_tune_epochs": 10, "early_stopping_patience": 5,
                   "cache_views": 8, "backbone": "efficientnet_lite2"},
}


CACHE_KEY = ("backbone", "fine_tune_blocks", "augment_preset", "cache_views", "image_size",
             "resize", "augment")


def cache_store(cfg: dict, runs: Path) -> Path | None:
    """A trunk-cache folder shared by every run with the same views (same seed, data, backbone,
    boundary, augmentation, size): such runs differ only in training. The child points labtf's
    cache there (an absolute CACHE_DIR), so the store outlives each run's backup clean-up."""
    import hashlib

    from labtf.config import TrainConfig

    want = TrainConfig.from_dict(cfg).to_dict()
    if not want["cache_views"]:
        return None
    key = json.dumps({k: want[k] for k in CACHE_KEY + ("seed", "data")}, sort_keys=True)
    store = runs / "_trunk_cache" / hashlib.sha256(key.encode()).hexdigest()[:16]
    store.mkdir(parents=True, exist_ok=True)
    (store / "key.json").write_text(key)
    return store.resolve()


def train_child(scenes: Path, recipe: str, seed: int, out: Path) -> dict:
    """Train one recipe in a child process under /usr/bin/time -v; returns seconds and peak RSS."""
    cfg = {"data": str(scenes / "manifest.csv"), "seed": seed, **RECIPES[recipe]}
    code = ("import json,sys,logging; logging.basicConfig(level=logging.INFO, format='labtf: %(message)s');"
            "import labtf.trunk_cache as tc; tc.CACHE_DIR = sys.argv[4] or tc.CACHE_DIR;"
            "from labtf.config import TrainConfig; from labtf.training import train;"
            "train(TrainConfig.from_dict(json.loads(sys.argv[1])), sys.argv[2], "
            "resume=sys.argv[3] == '1', verbose=0)")
    resume = "1" if (out / "config.json").is_file() else "0"
    store = cache_store(cfg, out.parent)
    shared = bool(store and resume == "0" and any(store.glob("train_x*.npy")))
    cmd = ["/usr/bin/time", "-v", sys.executable, "-c", code, json.dumps(cfg), str(out), resume,
           str(store or "")]
    t0, load0 = time.time(), os.getloadavg()[0]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"recipe {recipe} seed {seed} failed")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    cpu = sum(float(v) for v in re.findall(
        r"(?:User|System) time \(seconds\): ([\d.]+)", proc.stderr))
    return {"train_seconds": round(time.time() - t0, 1),
            "peak_rss_gb": round(int(rss.group(1)) / 1e6, 2) if rss else None,
            "load": f"{load0:.0f}-{os.getloadavg()[0]:.0f}", "cpu_seconds": round(cpu, 1),
            "cache_shared": shared}


def _upsample(maps, size: int):
    import numpy as np
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(m.astype(np.float32), mode="F").resize(
        (size, size), Image.BILINEAR)) for m in maps])


def localisation(maps, masks, correct) -> dict:
    """Pointing hit rate (all / correct) and energy in mask from input-size maps."""
    import numpy as np

    from labtf.explain.metrics import mask_scores

    hits, energy = [], []
    for m, mask in zip(maps, masks):
        h, e = mask_scores(np.maximum(m, 0), mask, TOLERANCE)
        hits.append(h)
        energy.append(e)
    hits, correct = np.array(hits), np.asarray(correct, bool)
    return {"hit_all": float(hits.mean()), "hit_correct": float(hits[correct].mean()),
            "energy": float(np.mean(energy))}


def scores(y, probs, classes) -> dict:
    """top-1, balanced top-1 and macro-F1 (labtf's own metrics)."""
    from labtf.evaluation import compute_metrics

    m = compute_metrics(y, probs, classes)
    from sklearn.metrics import balanced_accuracy_score

    return {"top1": m["accuracy"], "balanced": float(balanced_accuracy_score(y, probs.argmax(1))),
            "macro_f1": m["macro_f1"]}


def _test_set(scenes: Path, classes: list[str], size: int, resize: str):
    import numpy as np

    from labtf.explain.metrics import load_mask
    from labtf.images import load_rgb, to_square
    from labtf.manifest import read_manifest

    samples = [s for s in read_manifest(scenes / "manifest.csv", validate=False).samples
               if s.split == "test"]
    x = np.stack([to_square(load_rgb(s.path), size, resize) for s in samples]).astype(np.float32)
    masks = [load_mask(scenes / "masks", s.path, size, resize) for s in samples]
    y = np.array([classes.index(s.label) for s in samples])
    return x, y, masks


def score_run(run_path: Path, scenes: Path) -> dict:
    """Scores of a finished run on the scenes test split (plain, tta, cam14 variants)."""
    import keras
    import numpy as np

    from labtf.explain.core import conv_layer_names
    from labtf.cam_head import build_export_model, grad_cam
    from labtf.run import Run

    run = Run.open(run_path)
    meta = run.meta
    model = run.load_model()
    size = int(meta["image_size"])
    x, y, masks = _test_set(scenes, run.classes, size, meta.get("resize", "crop"))
    exp = build_export_model(model, meta["cam_layer"])
    probs, cams = [], []
    for i in range(0, len(x), 32):
        out = exp(x[i:i + 32], training=False)
        probs.append(np.asarray(out["probabilities"], np.float64))
        cams.append(np.asarray(out["cam"], np.float32))
    probs, cams = np.concatenate(probs), np.concatenate(cams)
    correct = probs.argmax(1) == y
    res = {"plain": {**scores(y, probs, run.classes),
                     **localisation(_upsample(cams, size), masks, correct)}}
    flipped = np.concatenate([np.asarray(model(x[i:i + 32, :, ::-1], training=False), np.float64)
                              for i in range(0, len(x), 32)])
    tta = (probs + flipped) / 2
    res["tta"] = {**scores(y, tta, run.classes),
                  **localisation(_upsample(cams, size), masks, tta.argmax(1) == y)}
    names = conv_layer_names(model)
    shapes = {n: model.get_layer(n).output.shape for n in names}
    l14 = [n for n in names if shapes[n][1] == size // 16][-1]
    g = grad_cam(model, x, l14, probs.argmax(1))
    res["cam14"] = {**res["plain"], **localisation(_upsample(g, size), masks, correct),
                    "layer": l14}
    del keras
    return res


def probe(scenes: Path, seed: int, backbone: str = "efficientnet_lite0") -> dict:
    """Logistic regression on frozen GAP features; its CAM from the regression weights."""
    import keras
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from labtf.backbones import get_backbone
    from labtf.images import load_rgb, to_square
    from labtf.manifest import read_manifest
    from labtf.model import GAP, build_classifier

    t0 = time.time()
    index = read_manifest(scenes / "manifest.csv", validate=False)
    classes = index.classes
    spec = get_backbone(backbone)
    size = spec.input_size
    full = build_classifier(spec, len(classes), size, weights="imagenet")
    feat_layer = full.get_layer(GAP).input._keras_history.operation.name
    fmodel = keras.Model(full.input, full.get_layer(feat_layer).output)

    def feats(samples):
        out = []
        for i in range(0, len(samples), 32):
            xb = np.stack([to_square(load_rgb(s.path), size, "crop") for s in samples[i:i + 32]])
            out.append(np.asarray(fmodel(xb.astype(np.float32), training=False), np.float32))
        return np.concatenate(out)

    fit = [s for s in index.samples if s.split in ("train", "val")]
    a_fit = feats(fit)
    ytr = np.array([classes.index(s.label) for s in fit])
    clf = LogisticRegression(max_iter=3000, random_state=seed).fit(a_fit.mean(axis=(1, 2)), ytr)
    x, y, masks = _test_set(scenes, classes, size, "crop")
    a = np.concatenate([np.asarray(fmodel(x[i:i + 32], training=False), np.float32)
                        for i in range(0, len(x), 32)])
    probs = clf.predict_proba(a.mean(axis=(1, 2)))
    pred = probs.argmax(1)
    cams = np.maximum(np.einsum("nhwk,nk->nhw", a, clf.coef_[pred]), 0)
    res = {**scores(y, probs, classes), **localisation(_upsample(cams, size), masks, pred == y)}
    return {"plain": res, "train_seconds": round(time.time() - t0, 1), "peak_rss_gb": None}


ROW = ("| {recipe} | {seeds} | {top1} | {balanced} | {macro_f1} | {hit_all} | {hit_correct} | "
       "{energy} | {train_seconds} | {cpu_seconds} | {peak_rss_gb} | {load} |")
HEADER = ("| recipe | seeds | top-1 | balanced top-1 | macro-F1 | pointing hit@15 all | "
          "pointing hit@15 correct | energy in mask | train s (wall) | train CPU s | peak RSS GB | "
          "load avg (train) |\n" + "|---" * 12 + "|")


def _fmt(vals: list[float], pct: bool = True) -> str:
    import numpy as np

    vals = [v for v in vals if v is not None]
    if not vals:
        return "-"
    k = 100 if pct else 1
    if len(vals) == 1:
        return f"{k * vals[0]:.1f}" if pct else f"{vals[0]:g}"
    return f"{k * np.mean(vals):.1f} ± {k * np.std(vals, ddof=1):.1f}"


def table(results: dict[str, list[dict]]) -> str:
    """Markdown rows: mean ± sd over seeds per recipe and variant."""
    lines = [HEADER]
    for recipe, runs in results.items():
        for variant in ("plain", "tta", "cam14"):
            if variant not in runs[0]:
                continue
            vs = [r[variant] for r in runs]
            name = recipe if variant == "plain" else f"{recipe} + {variant}"
            if any(r.get("cache_shared") for r in runs):
                name += " (trunk cache reused: time excludes it)"
            lines.append(ROW.format(
                recipe=name, seeds=",".join(str(r["seed"]) for r in runs),
                **{k: _fmt([v[k] for v in vs]) for k in ("top1", "balanced", "macro_f1", "hit_all",
                                                         "hit_correct", "energy")},
                train_seconds=_fmt([r["train_seconds"] for r in runs], pct=False),
                peak_rss_gb=_fmt([r["peak_rss_gb"] for r in runs], pct=False),
                cpu_seconds=_fmt([r.get("cpu_seconds") for r in runs], pct=False),
                load=",".join(str(r.get("load", "-")) for r in runs)))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenes", type=Path)
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES),
                    help=f"Recipes, each optionally with its own seeds (lpft_cosine@0,1); "
                         f"known: {', '.join(RECIPES)}.")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out", type=Path, default=Path("runs/scenes"))
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    from record import Recorder

    rec = Recorder()
    results: dict[str, list[dict]] = {}
    for item in args.recipes:
        recipe, _, own = item.partition("@")
        if recipe not in RECIPES:
            ap.error(f"unknown recipe '{recipe}'; known: {', '.join(RECIPES)}")
        for seed in ([int(x) for x in own.split(",")] if own else args.seeds):
            out = args.out / f"{recipe}-s{seed}"
            cache = out / "scores.json"
            if cache.is_file():
                r = json.loads(cache.read_text())
            elif recipe == "probe":
                r = probe(args.scenes, seed)
            else:
                timing = train_child(args.scenes, recipe, seed, out) \
                    if not (out / "model.keras").is_file() else {}
                r = {**score_run(out, args.scenes), **timing}
            r["seed"] = seed
            out.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(r, indent=1))
            results.setdefault(recipe, []).append(r)
            print(f"{recipe} seed {seed}: " + json.dumps(r["plain"]), flush=True)
    md = table(results)
    print(md)
    if not args.no_record:
        rec.write(RESULTS, md, append=True)


if __name__ == "__main__":
    main()
