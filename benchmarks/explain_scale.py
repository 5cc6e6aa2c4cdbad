"""Peak memory and time of ``labtf explain-eval`` and ``labtf explain`` on hundreds of images.

Each command runs in its own process under ``/usr/bin/time -v`` (peak RSS = its
"Maximum resident set size"). The images: ``--data``/``--masks`` when given (e.g. the
photo-scene test split), else a scene set made here from RUN's test images: each
test image's object (its non-white pixels; the embedded clipart is drawn on white)
pasted ``--variants`` times at a random scale and position onto smooth random
colour backgrounds, with its exact mask. The figures go to stdout and, with
``--record``, to a Markdown file (date, machine, load average and commands included).

Usage:
    python benchmarks/explain_scale.py RUN [--data DIR --masks DIR] [--variants 8]
        [--methods gradcam] [--batch-size 8] [--record benchmarks/results/explain_scale.md]
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def make_scenes(run_path: str, out: Path, variants: int, seed: int = 0) -> tuple[Path, Path, int]:
    """Write ``out/images/<class>/*.png`` and ``out/masks/*.png`` from RUN's test images."""
    import numpy as np
    from PIL import Image
    from scipy.ndimage import gaussian_filter

    from labtf.manifest import read_manifest
    from labtf.run import Run

    run = Run.open(run_path)
    size = int(run.meta["image_size"])
    rng = np.random.default_rng(seed)
    test = [s for s in read_manifest(run.file("split.csv"), validate=False).samples
            if s.split == "test"]
    n = 0
    (out / "masks").mkdir(parents=True, exist_ok=True)
    for s in test:
        obj = Image.open(s.path).convert("RGB")
        for k in range(variants):
            noise = rng.random((size // 8, size // 8, 3))
            bg = gaussian_filter(noise, (1.5, 1.5, 0)) * 255
            scene = Image.fromarray(bg.clip(0, 255).astype(np.uint8)).resize((size, size))
            scale = rng.uniform(0.35, 0.8) * size / max(obj.size)
            w, h = max(8, int(obj.width * scale)), max(8, int(obj.height * scale))
            small = np.asarray(obj.resize((w, h)))
            alpha = small.min(axis=-1) < 235  # not the white drawing background
            x0, y0 = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
            arr = np.asarray(scene).copy()
            arr[y0:y0 + h, x0:x0 + w][alpha] = small[alpha]
            mask = np.zeros((size, size), np.uint8)
            mask[y0:y0 + h, x0:x0 + w][alpha] = 255
            name = f"{Path(s.path).stem}_{k}"
            folder = out / "images" / s.label
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(folder / f"{name}.png")
            Image.fromarray(mask).save(out / "masks" / f"{name}.png")
            n += 1
    return out / "images", out / "masks", n


def timed(cmd: list[str], log: Path) -> dict:
    """Run ``cmd`` under /usr/bin/time -v (its stderr, with the progress lines, goes to
    ``log``); peak RSS (GB), wall seconds, stdout."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    with open(log, "w") as err:
        proc = subprocess.run(["/usr/bin/time", "-v", *cmd], stdout=subprocess.PIPE, stderr=err,
                              text=True, env=env, cwd=ROOT)
    secs = time.perf_counter() - t0
    stderr = log.read_text()
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr)
    return {"rc": proc.returncode, "seconds": secs,
            "rss_gb": int(rss.group(1)) / 2**20 if rss else float("nan"),
            "stdout": proc.stdout, "stderr": stderr}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--data", default=None, help="dataset (folder or manifest) [made here]")
    ap.add_argument("--masks", default=None, help="mask folder of --data")
    ap.add_argument("--variants", type=int, default=8, help="scenes per test image [8]")
    ap.add_argument("--methods", default="gradcam")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--skip-explain", action="store_true", help="only explain-eval")
    ap.add_argument("--work", default=None, help="folder for images and outputs [a temp dir]")
    ap.add_argument("--record", default=None, help="write the Markdown here")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from record import Recorder

    rec = Recorder()   # date, command, commit, machine, load at start and end
    work = Path(args.work or tempfile.mkdtemp(prefix="explain_scale_"))
    work.mkdir(parents=True, exist_ok=True)
    if args.data:
        data, masks, n_images = args.data, args.masks, None
    else:
        data, masks, n_images = make_scenes(args.run, work / "scenes", args.variants)
        print(f"made {n_images} scenes in {data} (masks {masks})", flush=True)
    py = [sys.executable, "-m", "cli"]
    runs = []  # (name, command, how it is shown, images)
    cmd = py + ["explain-eval", args.run, str(data), "--methods", args.methods,
                "--batch-size", str(args.batch_size), "--steps", str(args.steps),
                "--sanity-images", "6", "--out", str(work / "eval")]
    cmd += ["--masks", str(masks)] if masks else []
    runs.append(("explain-eval", cmd, " ".join(cmd), n_images))
    if not args.skip_explain:
        files = sorted(str(p) for p in Path(data).rglob("*.png")) if Path(data).is_dir() else []
        if files:
            opts = ["--method", args.methods.split(",")[0], "--batch-size", str(args.batch_size),
                    "--out", str(work / "maps")]
            shown = " ".join(py + ["explain", args.run, f"<the {len(files)} PNGs of {data}>",
                                   *opts])
            runs.append(("explain", py + ["explain", args.run, *files, *opts], shown,
                         len(files)))
    rows = []
    for name, c, shown, n in runs:
        print("running:", shown, f"(stderr: {work / name}.log)", flush=True)
        r = timed(c, work / f"{name}.log")
        if r["rc"] != 0:
            print(r["stderr"][-3000:], file=sys.stderr)
            raise SystemExit(f"{name} failed with status {r['rc']}")
        m = re.search(r"Faithfulness on (\d+) image", r["stdout"])
        n = int(m.group(1)) if m else n
        rows.append((name, n, r))
        print(f"{name}: {n} images, peak RSS {r['rss_gb']:.2f} GB, {r['seconds']:.0f} s", flush=True)
    eval_table = rows[0][2]["stdout"].split("written:")[0].strip()
    lines = [
        "# explain / explain-eval at scale: peak memory and time", "",
        f"Images: {data}" + (f" (masks {masks})" if masks else "") + ".", "",
        "Commands (each its own process under `/usr/bin/time -v`):", "",
        *[f"    {shown}" for _, _, shown, _ in runs], "",
        "| command | images | batch size | peak RSS (GB) | seconds | images / s |",
        "|---|---:|---:|---:|---:|---:|"]
    for name, n, r in rows:
        lines.append(f"| {name} | {n} | {args.batch_size} | {r['rss_gb']:.2f} | "
                     f"{r['seconds']:.0f} | {n / r['seconds']:.2f} |")
    lines += ["", "explain-eval's table:", "", eval_table, ""]
    text = "\n".join(lines)
    print(text)
    if args.record:
        rec.write(args.record, text)
        print(f"written: {args.record}")


if __name__ == "__main__":
    main()
