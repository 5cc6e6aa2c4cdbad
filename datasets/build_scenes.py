#!/usr/bin/env python3
"""Build ``scenes``: a photo-scene benchmark of cut-out objects on real photographs.

labtf's users classify photographs of objects in cluttered rooms; the embedded
clipart set (drawings on white) says little about that. This script builds, on
demand and deterministically, a harder set from two kinds of public material
installed from Debian packages (nothing is downloaded, nothing large committed):

* objects: openclipart-png drawings with their alpha channel (the 7 classes of
  ``clipart_sources.csv`` plus ``scenes_sources.csv``: 9 classes, 30-67 source
  drawings each);
* backgrounds: real photographs from Debian wallpaper packages, listed in
  ``scenes_backgrounds.csv`` (photos that show one of the classes are left out).

Each scene is a random crop of one background photo with one labelled drawing
pasted on it at a random scale (its bounding box 5-50% of the image area),
position, flip, small rotation, colour and blur jitter, and 0-2 unlabelled
distractor drawings from other openclipart folders under it. The exact object
mask comes from the drawing's alpha (``masks/<name>.png``, white = object).

The split is object-disjoint *and* background-disjoint: drawings are grouped
(same name once colour/BW/numbering marks are removed, or near-duplicates by
labtf's own pHash check), whole groups go to train, val or test, and test
scenes use background photos that no train scene uses.

Output (``--out``, default ``scenes/``)::

    images/<class>/<name>.jpg   256 x 256 RGB JPEG (quality 90)
    masks/<name>.png            object mask, same name
    manifest.csv                path,label,split (for ``labtf train OUT/manifest.csv``)
    scenes.csv                  provenance: drawing, background, crop, scale, ...

Usage::

    sudo apt-get install openclipart-png mate-backgrounds lomiri-wallpapers-16.04 \\
        lomiri-wallpapers-20.04 plasma-workspace-wallpapers
    python datasets/build_scenes.py --out scenes

Options: ``--seed`` (default 0), ``--train/--val/--test`` scenes per class
(default 120/15/50), ``--size`` (256), ``--classes`` (a subset), ``--force``
(replace an existing output). The output is written to a temporary sibling
folder and renamed into place when complete. Pillow and numpy only (plus
labtf's pHash for grouping when labtf is importable).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

HERE = Path(__file__).resolve().parent
CLIPART_ROOT = Path("/usr/share/openclipart/png")
SOURCES = [HERE / "clipart_sources.csv", HERE / "scenes_sources.csv"]
BACKGROUNDS = HERE / "scenes_backgrounds.csv"
#: openclipart folders the unlabelled distractors come from (none of them holds a class).
DISTRACTOR_FOLDERS = ("office", "tools", "computer/hardware", "plants", "electronics", "education",
                      "containers", "recreation/toys", "recreation/sports", "food/desserts",
                      "food/breads_and_carbs", "people/clothing", "household")
N_DISTRACTORS = 240
AREA_RANGE = (0.05, 0.50)      # labelled object's bounding box, fraction of the image
DISTRACTOR_AREA = (0.02, 0.10)
ROTATION_DEG = 15.0
BG_CROP = (0.35, 1.0)          # background crop side, fraction of the photo's short side
BG_LONG_SIDE = 1024            # photos are decoded once at about this size
OBJ_LONG_SIDE = 512            # drawings are kept at most this size after cropping
MIN_CONTENT = 48               # px: drawings whose opaque part is smaller are refused
TEST_FRACTION, VAL_FRACTION = 0.3, 0.1
#: Classes whose objects are whole rectangles (no alpha needed).
RECTANGULAR = ("flag", "playing_card")
#: Largest source drawing read (a few openclipart files are hundreds of megapixels); checked
#: from the header, so importing this module leaves Pillow's global limit alone.
MAX_SOURCE_PIXELS = 20_000_000


@dataclass
class Drawing:
    """One source drawing (RGBA, cropped to its opaque part)."""

    label: str
    source: str
    image: Image.Image
    group: str = ""


def _opaque_crop(path: Path, allow_opaque: bool = False) -> Image.Image | None:
    """The drawing as RGBA cropped to its opaque pixels, at most OBJ_LONG_SIDE; None if unusable.

    A drawing with no transparent pixel is refused (its white canvas would be pasted too),
    except where ``allow_opaque``: a flag or a card is its whole rectangle.
    """
    try:
        with Image.open(path) as im:
            if im.size[0] * im.size[1] > MAX_SOURCE_PIXELS:
                return None
            im.load()
            rgba = im.convert("RGBA")
    except (OSError, Image.DecompressionBombError, ValueError):
        return None
    alpha = np.asarray(rgba.getchannel("A"))
    if alpha.max() < 128 or (alpha.min() > 8 and not allow_opaque):
        return None
    bbox = Image.fromarray((alpha > 8).astype(np.uint8) * 255).getbbox()
    if bbox is None:
        return None
    rgba = rgba.crop(bbox)
    if min(rgba.size) < MIN_CONTENT // 2 or max(rgba.size) < MIN_CONTENT:
        return None
    rgba.thumbnail((OBJ_LONG_SIDE, OBJ_LONG_SIDE), Image.LANCZOS)
    return rgba


def name_key(label: str, source: str) -> str:
    """Group key from a file name: colour/BW marks and trailing numbering removed."""
    stem = Path(source).stem.lower()
    stem = re.sub(r"(^|_)(bw|b_w|colou?r|col|grey|gray|r|s|l|d)(?=_|$)", "_", stem)
    stem = re.sub(r"[_\-\s\d]+$", "", stem)
    stem = re.sub(r"_+", "_", stem).strip("_")
    return f"{label}/{stem}"


def read_sources(root: Path, classes: list[str] | None) -> list[Drawing]:
    """The labelled drawings of every source CSV (class, source_path columns)."""
    out = []
    for csv_path in SOURCES:
        with open(csv_path, newline="") as fh:
            for row in csv.DictReader(fh):
                if classes and row["class"] not in classes:
                    continue
                img = _opaque_crop(root / row["source_path"], row["class"] in RECTANGULAR)
                if img is None:
                    print(f"skipped (no usable alpha): {row['source_path']}", file=sys.stderr)
                    continue
                out.append(Drawing(row["class"], row["source_path"], img))
    return out


def group_drawings(drawings: list[Drawing]) -> None:
    """Set ``group``: same name key, or near-duplicates by labtf's pHash check, join one group."""
    parent = list(range(len(drawings)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    keys: dict[str, int] = {}
    for i, d in enumerate(drawings):
        k = name_key(d.label, d.source)
        if k in keys:
            parent[find(i)] = find(keys[k])
        keys.setdefault(k, i)
    try:
        from labtf.curate.phash import near_duplicate_pairs, signature
    except ImportError:
        near_duplicate_pairs = None
    if near_duplicate_pairs is not None:
        sigs = []
        for d in drawings:
            white = Image.new("RGBA", d.image.size, (255, 255, 255, 255))
            white.alpha_composite(d.image)
            sigs.append(signature(white.convert("RGB")))
        for pair in near_duplicate_pairs(sigs):
            i, j = int(pair[0]), int(pair[1])
            if drawings[i].label == drawings[j].label:
                parent[find(i)] = find(find(j))
    for i, d in enumerate(drawings):
        d.group = drawings[find(i)].source


def split_groups(drawings: list[Drawing], seed: int) -> dict[str, str]:
    """Group -> train/val/test per class (about 30% of the drawings test, 10% val)."""
    side: dict[str, str] = {}
    rng = np.random.default_rng(seed)
    for label in sorted({d.label for d in drawings}):
        sizes: dict[str, int] = {}
        for d in drawings:
            if d.label == label:
                sizes[d.group] = sizes.get(d.group, 0) + 1
        groups = sorted(sizes)
        rng.shuffle(groups)
        total, t, v = sum(sizes.values()), 0, 0
        for g in groups:
            if t < TEST_FRACTION * total:
                side[g], t = "test", t + sizes[g]
            elif v < VAL_FRACTION * total:
                side[g], v = "val", v + sizes[g]
            else:
                side[g] = "train"
        if sorted(set(side[g] for g in groups)) != ["test", "train", "val"]:
            raise SystemExit(f"error: class {label} has too few drawing groups ({len(groups)}) "
                             "for train, val and test")
    return side


def read_backgrounds(classes_seed: int) -> dict[str, list[tuple[str, Image.Image]]]:
    """Background photos decoded at about BG_LONG_SIDE, split train/test (val uses train's).

    Raises:
        SystemExit: fewer than 8 listed photos are installed.
    """
    rows = []
    with open(BACKGROUNDS, newline="") as fh:
        rows = [r for r in csv.DictReader(fh)]
    photos = []
    missing = set()
    for r in rows:
        p = Path(r["path"])
        if not p.is_file():
            missing.add(r["package"])
            continue
        with Image.open(p) as im:
            im.draft("RGB", (BG_LONG_SIDE, BG_LONG_SIDE))
            img = im.convert("RGB")
        img.thumbnail((BG_LONG_SIDE, BG_LONG_SIDE), Image.LANCZOS)
        photos.append((str(p), r["split"], img))
    if len(photos) < 8:
        raise SystemExit("error: background photos not installed; run: sudo apt-get install "
                         + " ".join(sorted(missing or {r['package'] for r in rows})))
    if missing:
        print(f"note: background packages not installed: {', '.join(sorted(missing))}",
              file=sys.stderr)
    out: dict[str, list] = {"train": [], "test": []}
    for path, split, img in photos:
        out[split].append((path, img))
    out["val"] = out["train"]
    return out


def read_distractors(root: Path, seed: int) -> list[tuple[str, Image.Image]]:
    """Unlabelled drawings from DISTRACTOR_FOLDERS (a fixed seeded subset)."""
    files = sorted(p for f in DISTRACTOR_FOLDERS if (root / f).is_dir() for p in (root / f).rglob("*.png"))
    rng = np.random.default_rng(seed + 7)
    rng.shuffle(files)
    out = []
    for p in files:
        if len(out) >= N_DISTRACTORS:
            break
        img = _opaque_crop(p)
        if img is not None:
            out.append((str(p.relative_to(root)), img))
    return out


def _jitter(obj: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Flip, small rotation, colour and blur jitter of an RGBA drawing."""
    if rng.random() < 0.5:
        obj = obj.transpose(Image.FLIP_LEFT_RIGHT)
    angle = float(rng.uniform(-ROTATION_DEG, ROTATION_DEG))
    obj = obj.rotate(angle, resample=Image.BICUBIC, expand=True)
    rgb, alpha = obj.convert("RGB"), obj.getchannel("A")
    rgb = ImageEnhance.Brightness(rgb).enhance(float(rng.uniform(0.75, 1.2)))
    rgb = ImageEnhance.Contrast(rgb).enhance(float(rng.uniform(0.75, 1.2)))
    rgb = ImageEnhance.Color(rgb).enhance(float(rng.uniform(0.6, 1.3)))
    out = rgb.convert("RGBA")
    out.putalpha(alpha)
    return out


def _scaled(obj: Image.Image, area: float, size: int) -> Image.Image:
    """Resize so the bounding box covers ``area`` of a size x size image (fits inside)."""
    w, h = obj.size
    scale = (area * size * size / (w * h)) ** 0.5
    scale = min(scale, 0.95 * size / max(w, h))
    return obj.resize((max(4, round(w * scale)), max(4, round(h * scale))), Image.LANCZOS)


def _background(photo: Image.Image, rng: np.random.Generator, size: int) -> tuple[Image.Image, tuple]:
    short = min(photo.size)
    side = int(short * rng.uniform(*BG_CROP))
    x0 = int(rng.integers(0, photo.size[0] - side + 1))
    y0 = int(rng.integers(0, photo.size[1] - side + 1))
    box = (x0, y0, x0 + side, y0 + side)
    bg = photo.crop(box).resize((size, size), Image.LANCZOS)
    if rng.random() < 0.5:
        bg = bg.transpose(Image.FLIP_LEFT_RIGHT)
    return bg, box


def render_scene(drawing: Image.Image, photo: Image.Image, distractors: list[Image.Image],
                 rng: np.random.Generator, size: int) -> tuple[Image.Image, np.ndarray, dict]:
    """One scene: background crop, distractors, then the labelled object on top.

    Returns:
        ``(rgb image, bool mask (size, size), parameters)``.
    """
    canvas, box = _background(photo, rng, size)
    canvas = canvas.convert("RGBA")
    for d in distractors:
        d = _scaled(_jitter(d, rng), float(rng.uniform(*DISTRACTOR_AREA)), size)
        pos = (int(rng.integers(0, size - d.size[0] + 1)), int(rng.integers(0, size - d.size[1] + 1)))
        canvas.alpha_composite(d, pos)
    area = float(np.exp(rng.uniform(np.log(AREA_RANGE[0]), np.log(AREA_RANGE[1]))))
    obj = _scaled(_jitter(drawing, rng), area, size)
    blur = float(rng.uniform(0.0, 1.2))
    if blur > 0.3:
        obj = obj.filter(ImageFilter.GaussianBlur(blur))
    pos = (int(rng.integers(0, size - obj.size[0] + 1)), int(rng.integers(0, size - obj.size[1] + 1)))
    canvas.alpha_composite(obj, pos)
    mask = np.zeros((size, size), bool)
    a = np.asarray(obj.getchannel("A")) > 127
    mask[pos[1]:pos[1] + a.shape[0], pos[0]:pos[0] + a.shape[1]] = a
    rgb = canvas.convert("RGB")
    if rng.random() < 0.3:                                      # camera-like softness
        rgb = rgb.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 0.8))))
    params = {"crop": box, "area": round(area, 4), "object_px": int(mask.sum()),
              "bbox": (pos[0], pos[1], pos[0] + obj.size[0], pos[1] + obj.size[1]),
              "blur": round(blur, 2), "distractors": len(distractors)}
    return rgb, mask, params


def build(out: Path, *, seed: int = 0, per_class: dict[str, int] | None = None, size: int = 256,
          classes: list[str] | None = None, root: Path = CLIPART_ROOT) -> dict:
    """Build the scene set into ``out`` (a new folder); returns counts.

    Raises:
        SystemExit: missing packages.
    """
    per_class = per_class or {"train": 120, "val": 15, "test": 50}
    if not root.is_dir():
        raise SystemExit("error: openclipart not installed; run: sudo apt-get install openclipart-png")
    t0 = time.time()
    drawings = read_sources(root, classes)
    group_drawings(drawings)
    side = split_groups(drawings, seed)
    photos = read_backgrounds(seed)
    distractors = read_distractors(root, seed)
    print(f"inputs read in {time.time() - t0:.1f} s: {len(drawings)} drawings, "
          f"{len(distractors)} distractors", file=sys.stderr)
    labels = sorted({d.label for d in drawings})
    rows, prov = [], []
    for label in labels:
        for split in ("train", "val", "test"):
            pool = [d for d in drawings if d.label == label and side[d.group] == split]
            for k in range(per_class[split]):
                h = int.from_bytes(hashlib.sha256(f"{seed}/{label}/{split}/{k}".encode()).digest()[:8],
                                   "little")
                rng = np.random.default_rng(h)
                d = pool[k % len(pool)] if k < len(pool) else pool[int(rng.integers(len(pool)))]
                bg_path, photo = photos[split][int(rng.integers(len(photos[split])))]
                n_dis = int(rng.choice([0, 1, 1, 2]))
                dis = [distractors[int(rng.integers(len(distractors)))] for _ in range(n_dis)]
                img, mask, params = render_scene(d.image, photo, [x[1] for x in dis], rng, size)
                name = f"{label}_{split}_{k:04d}"
                (out / "images" / label).mkdir(parents=True, exist_ok=True)
                img.save(out / "images" / label / f"{name}.jpg", quality=90)
                Image.fromarray(mask.astype(np.uint8) * 255).save(out / "masks" / f"{name}.png")
                rows.append((f"images/{label}/{name}.jpg", label, split))
                prov.append({"name": name, "label": label, "split": split, "drawing": d.source,
                             "group": d.group, "background": bg_path,
                             "distractors": ";".join(x[0] for x in dis),
                             **{k2: str(v) for k2, v in params.items()}})
    with open(out / "manifest.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["path", "label", "split"])
        w.writerows(rows)
    with open(out / "scenes.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(prov[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(prov)
    counts = {s: sum(r[2] == s for r in rows) for s in ("train", "val", "test")}
    counts.update({"classes": len(labels), "drawings": len(drawings),
                   "groups": len({d.group for d in drawings}), "seconds": round(time.time() - t0, 1),
                   "backgrounds_train": len(photos["train"]), "backgrounds_test": len(photos["test"])})
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="scenes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train", type=int, default=120, help="Train scenes per class.")
    ap.add_argument("--val", type=int, default=15, help="Validation scenes per class.")
    ap.add_argument("--test", type=int, default=50, help="Test scenes per class.")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--classes", nargs="*", default=None)
    ap.add_argument("--force", action="store_true", help="Replace an existing output folder.")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if out.exists() and not args.force:
        print(f"error: {out} exists; pass --force to replace it", file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / "masks").mkdir()
        counts = build(tmp, seed=args.seed, size=args.size, classes=args.classes,
                       per_class={"train": args.train, "val": args.val, "test": args.test})
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"scenes: {counts['train']} train, {counts['val']} val, {counts['test']} test images, "
          f"{counts['classes']} classes from {counts['drawings']} drawings in {counts['groups']} "
          f"groups; backgrounds {counts['backgrounds_train']} train / {counts['backgrounds_test']} "
          f"test photos; {counts['seconds']} s -> {out}/manifest.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
