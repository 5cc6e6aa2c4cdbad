"""Collect -> curate -> split end to end against a loopback mirror; kill and resume; near-duplicates.

Builds a mirror of about 2,000 images (openclipart PNGs from /usr/share/openclipart/png,
or datasets/clipart when absent, plus planted near-duplicates: resized, re-encoded,
slightly cropped, colour-shifted), serves it with a fake Openverse API on 127.0.0.1,
runs ``labtf collect`` in a subprocess, SIGKILLs it mid-download, resumes it, and
checks that no file is lost or duplicated. Then curate + split, a clean timed
collect (throughput), and near-duplicate precision/recall against the planted truth.

    python benchmarks/collect_bench.py [--originals 1600] [--planted 100] [--out DIR]
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from labtf.collect.fakeserver import FakeServer  # noqa: E402
from labtf.collect.ledger import Ledger  # noqa: E402
from labtf.curate.planted import VARIANTS, make_variant, pair_scores  # noqa: E402

OPENCLIPART = Path("/usr/share/openclipart/png")
CATEGORIES = ("animals", "food", "people", "transportation", "recreation", "signs_and_symbols",
              "shapes", "computer")


def build_mirror(n_originals: int, n_planted: int, seed: int = 0):
    """Images (name -> bytes, type), queries per class, truth (name -> source id)."""
    rng = np.random.default_rng(seed)
    per = n_originals // len(CATEGORIES)
    images, queries, truth, label_of = {}, {}, {}, {}
    src_id = 0
    originals = []
    for cat in CATEGORIES:
        if OPENCLIPART.is_dir():
            files = sorted(p for p in (OPENCLIPART / cat).rglob("*.png")
                           if 3_000 < p.stat().st_size < 2_000_000)
        else:
            files = sorted((ROOT / "datasets/clipart").rglob("*.jpg"))
        rng.shuffle(files)
        names = []
        for p in files[:per]:
            name = f"{cat}__{p.stem}_{src_id}.png"
            images[name] = (p.read_bytes(), "image/png" if p.suffix == ".png" else "image/jpeg")
            truth[name] = src_id
            label_of[name] = cat
            originals.append(name)
            names.append(name)
            src_id += 1
        queries[cat] = names
    for name in rng.choice(originals, n_planted, replace=False):
        with Image.open(io.BytesIO(images[name][0])) as im:
            im.load()
            for v in VARIANTS:
                buf = io.BytesIO()
                make_variant(im, v, rng).save(buf, "JPEG", quality=90)
                vname = f"{Path(name).stem}__{v}.jpg"
                images[vname] = (buf.getvalue(), "image/jpeg")
                truth[vname] = truth[name]
                queries[label_of[name]].append(vname)
    # exact duplicate URLs, broken links, non-images: like the web
    for i, name in enumerate(originals[:30]):
        images[f"mirror_copy_{i}.png"] = images[name]
        queries[label_of[name]].append(f"mirror_copy_{i}.png")
    for i in range(20):
        queries[CATEGORIES[i % len(CATEGORIES)]].append(f"gone_{i}.png")
    for i in range(10):
        images[f"page_{i}.png"] = (b"<html>login</html>", "text/html")
        queries[CATEGORIES[i % len(CATEGORIES)]].append(f"page_{i}.png")
    return images, queries, truth


def planted_reference_set(seed: int = 0, embed: bool = True) -> dict:
    """Near-duplicate precision/recall on scikit-image photos + all of datasets/clipart, each with
    4 planted variants. Pairs between two different originals that the detector joins are the
    source's own look-alikes (datasets/README.md: recolours, same card design) and are counted
    apart."""
    import skimage.data as sd
    from labtf.curate.phash import UnionFind, group_pairs, near_duplicate_pairs, signature

    rng = np.random.default_rng(seed)
    srcs = [Image.fromarray(getattr(sd, n)()) for n in
            ("astronaut", "coffee", "chelsea", "rocket", "camera", "horse", "coins", "brick", "retina",
             "immunohistochemistry", "hubble_deep_field", "moon", "page", "text", "clock", "grass", "gravel")]
    srcs += [Image.open(p).convert("RGB") for p in sorted((ROOT / "datasets/clipart").rglob("*.jpg"))]
    imgs, truth, is_orig = [], [], []
    for k, im in enumerate(srcs):
        imgs.append(im)
        truth.append(k)
        is_orig.append(True)
        for v in VARIANTS:
            imgs.append(make_variant(im, v, rng))
            truth.append(k)
            is_orig.append(False)
    t = time.time()
    sigs = [signature(i) for i in imgs]
    if embed:
        from labtf.curate.embed import attach, embeddings

        attach(sigs, embeddings(imgs))
    groups = group_pairs(len(imgs), near_duplicate_pairs(sigs))
    el = time.time() - t
    sc = pair_scores(groups.of, truth)
    # sources whose *originals* the detector puts together are look-alikes of the source set
    uf = UnionFind(len(srcs))
    for m in groups.members:
        origs = [truth[i] for i in m if is_orig[i]]
        for o in origs[1:]:
            uf.union(origs[0], o)
    merged = [uf.find(k) for k in truth]
    sc2 = pair_scores(groups.of, merged)
    sc.update(images=len(imgs), sources=len(srcs), seconds=round(el, 1),
              precision_counting_source_lookalikes=round(sc2["precision"], 4),
              lookalike_source_links=sum(1 for k in range(len(srcs)) if uf.find(k) != k))
    return sc


def labtf(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from cli import main; sys.exit(main())", *args]


def collect_args(work: Path, kw: Path, base: str, workers: int) -> list[str]:
    return labtf("collect", str(work), "--keywords", str(kw), "--provider", "openverse",
                 "--base-url", f"openverse={base}", "--per-class", "100000", "--workers", str(workers),
                 "--rate", "0", "--timeout", "5", "--retries", "1")


def check_workspace(work: Path, n_candidates: int) -> dict:
    """No lost file, no duplicate file, no orphan, no partial."""
    recs = Ledger(work / "manifest.jsonl").read()
    latest = Ledger(work / "manifest.jsonl").latest()
    ok = {r["path"]: r for r in latest.values() if r["status"] == "ok"}
    files = {p.relative_to(work).as_posix() for p in (work / "images").rglob("*") if p.is_file()}
    partial = [f for f in files if "/.part-" in f]
    shas = Counter(hashlib.sha256((work / f).read_bytes()).hexdigest() for f in files if f not in partial)
    return {"records": len(recs), "urls_recorded": len(latest), "candidates": n_candidates,
            "ok_records": len(ok), "files": len(files) - len(partial),
            "missing_files": len(set(ok) - files), "unrecorded_files": len(files - set(ok) - set(partial)),
            "partial_files": len(partial), "duplicate_files": sum(v - 1 for v in shas.values() if v > 1),
            "urls_recorded_twice": len(recs) - len(latest)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--originals", type=int, default=1600)
    ap.add_argument("--planted", type=int, default=100, help="originals that get 4 variants each")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--latency", type=float, default=0.02, help="simulated seconds per image response")
    ap.add_argument("--kill-after", type=float, default=0.4, help="kill when this share is recorded")
    ap.add_argument("--out", default=None)
    ap.add_argument("--nd-only", action="store_true", help="only the planted reference set")
    ap.add_argument("--no-embed", action="store_true",
                    help="hashes + thumbnails only (no EfficientNet-Lite0)")
    a = ap.parse_args()
    ref = planted_reference_set(embed=not a.no_embed)
    print("near-duplicates, scikit-image + datasets/clipart with planted variants:", ref)
    if a.nd_only:
        return
    tmp = Path(a.out or tempfile.mkdtemp(prefix="collect_bench_"))
    tmp.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    images, queries, truth = build_mirror(a.originals, a.planted)
    n_cand = sum(len(v) for v in queries.values())
    print(f"mirror: {len(images)} objects, {n_cand} candidate URLs in {len(queries)} classes "
          f"({a.planted} originals x {len(VARIANTS)} planted variants), built in {time.time() - t0:.1f}s")
    kw = tmp / "keywords.json"
    kw.write_text(json.dumps({"classes": {c: [c] for c in queries}}))
    results: dict = {"mirror_objects": len(images), "candidate_urls": n_cand, "reference_set": ref}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with FakeServer(images, queries, latency_s=a.latency) as srv:
        work = tmp / "work"
        shutil.rmtree(work, ignore_errors=True)
        proc = subprocess.Popen(collect_args(work, kw, srv.base, a.workers), cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ledger = work / "manifest.jsonl"
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            n = sum(1 for _ in open(ledger, "rb")) if ledger.is_file() else 0
            if n >= a.kill_after * n_cand:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.05)
        proc.wait(timeout=30)
        killed_at = sum(1 for _ in open(ledger, "rb")) if ledger.is_file() else 0
        print(f"killed collector (SIGKILL) with {killed_at} of {n_cand} URLs recorded")
        t = time.time()
        r = subprocess.run(collect_args(work, kw, srv.base, a.workers), cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=600)
        print(r.stdout.strip(), f"(resume took {time.time() - t:.1f}s)")
        check = check_workspace(work, n_cand)
        print("after resume:", check)
        results["kill_resume"] = {"killed_at_records": killed_at, **check}

        clean = tmp / "clean"
        shutil.rmtree(clean, ignore_errors=True)
        t = time.time()
        subprocess.run(collect_args(clean, kw, srv.base, a.workers), cwd=ROOT, env=env, check=True,
                       capture_output=True, timeout=600)
        el = time.time() - t
        st = json.loads((clean / "report.json").read_text())["steps"]["collect"]
        results["throughput"] = {"seconds": round(el, 1), "urls": n_cand, "ok": st["ok"],
                                 "urls_per_s": round(n_cand / el, 1), "images_per_s": round(st["ok"] / el, 1),
                                 "workers": a.workers, "latency_s": a.latency}
        print("clean collect:", results["throughput"])

    t = time.time()
    subprocess.run(labtf("curate", str(work)), cwd=ROOT, env=env, check=True, capture_output=True,
                   timeout=900)
    results["curate_s"] = round(time.time() - t, 1)
    subprocess.run(labtf("split", str(work)), cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    report = json.loads((work / "report.json").read_text())["steps"]
    results["report"] = {k: {kk: vv for kk, vv in v.items() if kk != "per_class"} for k, v in report.items()}
    print((work / "report.md").read_text())

    # near-duplicates vs the planted truth (source URL name -> source id)
    latest = Ledger(work / "manifest.jsonl").latest()
    name_of = {r["path"]: r["url"].rsplit("/", 1)[1] for r in latest.values() if r["status"] == "ok"}
    doc = json.loads((work / "curation/groups.json").read_text())
    paths = sorted(p for p in name_of if (work / p).is_file())
    idx = {p: i for i, p in enumerate(paths)}
    pred = [-1] * len(paths)
    for g in doc["groups"]:
        for p in g["paths"]:
            if p in idx:
                pred[idx[p]] = g["group"]
    srcs = [truth.get(name_of[p], -1 - i) for i, p in enumerate(paths)]
    # only planted sources form true groups; other sources are alone
    counts = Counter(srcs)
    true_of = [s if counts[s] > 1 else -1 for s in srcs]
    raw = pair_scores(pred, true_of)
    # false pairs between two different originals of the mirror are look-alikes already in the
    # source collection (the same drawing filed twice, recolours); reported separately
    from itertools import combinations
    by: dict = {}
    for i, g in enumerate(pred):
        if g >= 0:
            by.setdefault(g, []).append(i)
    planted_src = {s_ for s_ in srcs if counts[s_] > 1}
    fp_orig = fp_planted = 0
    for m in by.values():
        for i, j in combinations(m, 2):
            if srcs[i] != srcs[j]:
                if srcs[i] in planted_src or srcs[j] in planted_src:
                    fp_planted += 1
                else:
                    fp_orig += 1
    raw["false_pairs_between_source_originals"] = fp_orig
    raw["false_pairs_touching_planted"] = fp_planted
    denom = raw["predicted_pairs"] - fp_orig
    raw["precision_excluding_source_lookalikes"] = raw["correct_pairs"] / denom if denom else 1.0
    results["near_duplicates"] = {"images": len(paths), "groups": len(doc["groups"]),
                                  "cross_class_groups": sum(g["cross_class"] for g in doc["groups"]),
                                  "vs_planted": raw}
    print("near-duplicates vs planted truth:", raw)
    (tmp / "collect_bench.json").write_text(json.dumps(results, indent=2))
    print(f"results: {tmp / 'collect_bench.json'}  total {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
