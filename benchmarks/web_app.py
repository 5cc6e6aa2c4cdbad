"""The offline web app (labtf export --format web) on a run's test split, in headless Chromium.

For each quantisation (int8, the default, and float32): export the bundle, open it at
phone width from a loopback server, classify every test image through the page's file
input, cut the network and reload (service worker), and compare with Python's predictor
on the same .tflite: top-1 agreement, max |dp|, CAM Pearson r. Also bundle size (and
gzipped), page start-up, per-image latency in the page beside Python's (same .tflite,
1 thread as the page's wasm build, and all cores), requests that left loopback, accuracy
of each against the labels. Writes the phone screenshot of the default bundle.

    python benchmarks/web_app.py RUN --out DIR [--record benchmarks/results/web_app.md]
        [--screenshot docs/web_app.png]
"""
from __future__ import annotations

import argparse
import gzip
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from exporters import export  # noqa: E402
from exporters.common import load_images, split_samples  # noqa: E402
from labtf.fileio import write_text  # noqa: E402
from labtf.run import Run  # noqa: E402


def sizes(folder: Path) -> tuple[int, int]:
    """Bytes of the bundle, and gzipped (what a server with compression sends)."""
    raw = zipped = 0
    for p in folder.rglob("*"):
        if p.is_file() and not p.name.startswith("parity"):
            data = p.read_bytes()
            raw += len(data)
            zipped += len(gzip.compress(data, 6))
    return raw, zipped


def python_side(bundle: Path, paths: list[Path], run: Run):
    """Python predictor on the same .tflite: probs, cams, latency (1 thread and all cores)."""
    from exporters.benchmark import measure_latency
    from exporters.tflite import TFLitePredictor
    from labtf.predict import predict_files

    pred = TFLitePredictor(bundle / "model.tflite")
    res = predict_files(pred, [str(p) for p in paths], top_k=len(run.classes), with_cam=True)
    probs = np.array([[dict(r.top)[c] for c in run.classes] for r in res])
    cams = np.array([r.cam for r in res])
    images, _ = load_images(split_samples(run, "test")[:1], pred.image_size, pred.resize)
    one = measure_latency(TFLitePredictor(bundle / "model.tflite", num_threads=1), images[0], runs=30)
    allc = measure_latency(pred, images[0], runs=30)
    return probs, cams, one, allc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run")
    ap.add_argument("--out", required=True, help="folder for the bundles (new)")
    ap.add_argument("--record", default=None, help="write the Markdown here")
    ap.add_argument("--screenshot", default=None, help="phone screenshot PNG of the int8 page")
    ap.add_argument("--quantize", nargs="+", default=["int8", "none"], choices=["int8", "none", "float16"],
                    help="bundles to measure")
    args = ap.parse_args()
    from cdp import chromium_path
    from webdrive import compare, run_page

    if chromium_path() is None:
        sys.exit("chromium is not installed (apt-get install chromium)")
    run = Run.open(args.run)
    samples = split_samples(run, "test")
    paths = [Path(s.path) for s in samples]
    truth = np.array([run.classes.index(s.label) for s in samples])
    size, resize = int(run.meta["image_size"]), run.meta.get("resize", "crop")
    out = Path(args.out)
    rows, checks = [], []
    for q in args.quantize:
        t = time.monotonic()
        bundle = export(run.path, "web", out / f"app_{q}", quantize=q)
        export_s = time.monotonic() - t
        shot = Path(args.screenshot) if (args.screenshot and q == "int8") else None
        page = run_page(bundle, paths, out / f"profile_{q}", screenshot=shot)
        probs, cams, py1, pyall = python_side(bundle, paths, run)
        fig = compare(page["results"], probs, cams)
        page_acc = float((np.array([r["probs"] for r in page["results"]]).argmax(1) == truth).mean())
        raw, zipped = sizes(bundle)
        model_mb = (bundle / "model.tflite").stat().st_size / 1e6
        off = [u for u in page["urls"] if not u.startswith((page["url"], "data:", "blob:"))]
        offline_ok = bool(page["offline_ready"] and page["offline"]["ready"]
                          and not page["offline"]["error"])
        rows.append(f"| {q} | {fig['n']} | {100 * fig['top1_agreement']:.1f}% | "
                    f"{fig['max_abs_dp']:.2e} | {fig['cam_r_min']:.4f} / {fig['cam_r_median']:.4f} | "
                    f"{100 * page_acc:.1f}% | {fig['page_ms_median']:.1f} | "
                    f"{fig['page_prep_ms_median']:.1f} | {py1:.1f} / {pyall:.1f} | "
                    f"{page['load_s']:.1f} | {model_mb:.1f} | {raw / 1e6:.1f} ({zipped / 1e6:.1f}) | "
                    f"{'yes' if offline_ok else 'NO'} | {len(off)} | {export_s:.0f} |")
        checks += [(f"{q}: top-1 agreement >= 99%", fig["top1_agreement"] >= 0.99,
                    f"{100 * fig['top1_agreement']:.1f}%"),
                   (f"{q}: CAM r >= 0.99 (min over images)", fig["cam_r_min"] >= 0.99,
                    f"{fig['cam_r_min']:.4f}"),
                   (f"{q}: offline after first load", offline_ok, str(offline_ok)),
                   (f"{q}: no request off loopback, no CSP violation",
                    not off and not page["violations"], f"{len(off)} / {len(page['violations'])}")]
        print(rows[-1], flush=True)
    load = os.getloadavg()
    chrome = subprocess.run([chromium_path(), "--version"], capture_output=True, text=True).stdout.strip()
    from exporters.web import NPM_INSTALL, RUNTIME_PACKAGE, RUNTIME_VERSION

    text = (f"# Web app: {run.meta.get('backbone')} {size} px {resize}, {len(run.classes)} classes, "
            f"{len(paths)} test images\n\n"
            f"Command: `python benchmarks/web_app.py {args.run} --out {args.out} "
            f"--quantize {' '.join(args.quantize)}"
            f"{' --screenshot ' + args.screenshot if args.screenshot else ''}`  \n"
            f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; machine: "
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, no GPU, "
            f"load average {load[0]:.1f} / {load[1]:.1f} at the end (1 / 5 min); {chrome} headless, "
            f"360 px wide; runtime {RUNTIME_PACKAGE} {RUNTIME_VERSION} (`{NPM_INSTALL}`), wasm CPU, "
            f"1 thread.\n\n"
            "Page vs Python = the same model.tflite through the page (file input, JS resize, "
            "LiteRT.js) and through `labtf predict` (Pillow, ai-edge-litert). Latency: median per "
            "image; page 'model' is the LiteRT.js call, 'photo' is decode + resize; Python is "
            "measure_latency (batch 1) with 1 thread / all cores.\n\n"
            "| model | images | top-1 agree | max abs dp | CAM r min / median | page accuracy | "
            "page model ms | page photo ms | Python ms 1 / all | start-up s | model MB | "
            "bundle MB (gzip) | offline | off-loopback requests | export s |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
            + "\n".join(rows) + "\n\n| target | met | measured |\n|---|---|---|\n"
            + "\n".join(f"| {n} | {'yes' if ok else 'NO'} | {v} |" for n, ok, v in checks) + "\n")
    print(text)
    if args.record:
        write_text(Path(args.record), text)


if __name__ == "__main__":
    main()
