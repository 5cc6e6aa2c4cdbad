"""datasets/build_scenes.py: a tiny photo-scene set, masks that match the pasted objects, splits."""
from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "datasets"))
import build_scenes  # noqa: E402

NEEDED = [build_scenes.CLIPART_ROOT] + [
    Path(r["path"]) for r in csv.DictReader(open(build_scenes.BACKGROUNDS, newline=""))][:3]
missing = [str(p) for p in NEEDED if not p.exists()]
if missing and os.environ.get("CI"):
    raise RuntimeError(f"CI must install openclipart-png and the wallpaper packages: {missing}")
needs_packages = pytest.mark.skipif(bool(missing), reason=f"Debian packages missing: {missing[:2]}")


def _disc(colour=(220, 20, 20)) -> Image.Image:
    img = Image.new("RGBA", (120, 90), (0, 0, 0, 0))
    ImageDraw.Draw(img).ellipse([5, 5, 114, 84], fill=colour + (255,))
    return img


def test_mask_is_exactly_the_pasted_object():
    """On a flat grey photo, the mask and the red pixels of a pasted red disc coincide."""
    photo = Image.new("RGB", (600, 400), (128, 128, 128))
    for seed in range(8):
        rng = np.random.default_rng(seed)
        img, mask, params = build_scenes.render_scene(_disc(), photo, [], rng, 128)
        a = np.asarray(img).astype(int)
        red = (a[..., 0] - a[..., 1] > 60)
        inter, union = (red & mask).sum(), (red | mask).sum()
        assert mask.sum() == params["object_px"] > 0
        assert inter / union > 0.9, (seed, inter / union)
        x0, y0, x1, y1 = params["bbox"]
        ys, xs = np.nonzero(mask)
        assert x0 <= xs.min() and xs.max() < x1 and y0 <= ys.min() and ys.max() < y1
        area = (x1 - x0) * (y1 - y0) / 128 ** 2
        assert build_scenes.AREA_RANGE[0] * 0.9 <= area <= build_scenes.AREA_RANGE[1] * 1.1


def test_same_seed_same_scene_other_seed_other_scene():
    photo = Image.effect_mandelbrot((400, 300), (-2, -1.2, 1, 1.2), 50).convert("RGB")
    a = build_scenes.render_scene(_disc(), photo, [_disc((0, 0, 200))], np.random.default_rng(3), 96)
    b = build_scenes.render_scene(_disc(), photo, [_disc((0, 0, 200))], np.random.default_rng(3), 96)
    c = build_scenes.render_scene(_disc(), photo, [_disc((0, 0, 200))], np.random.default_rng(4), 96)
    assert np.array_equal(np.asarray(a[0]), np.asarray(b[0])) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_name_key_groups_colour_and_numbered_variants():
    k = build_scenes.name_key
    assert k("fruit", "food/apple_bw.png") == k("fruit", "food/apple.png")
    assert k("drink", "x/coffee_bw_ganson.png") == k("drink", "x/coffee_ganson.png")
    assert k("bird", "a/colombo2.png") == k("bird", "a/colombo.png")
    assert k("bird", "a/acquila_01.png") == k("bird", "a/acquila_02.png")
    assert k("bird", "a/eagle.png") != k("bird", "a/swan.png")
    assert k("bird", "a/x.png") != k("fruit", "a/x.png")


@needs_packages
def test_tiny_build_is_object_and_background_disjoint(tmp_path):
    out = tmp_path / "scenes"
    (out / "masks").mkdir(parents=True)
    counts = build_scenes.build(out, seed=0, size=96, classes=["bird", "fruit", "drink"],
                                per_class={"train": 4, "val": 1, "test": 2})
    assert counts["train"] == 12 and counts["val"] == 3 and counts["test"] == 6
    rows = list(csv.DictReader(open(out / "manifest.csv", newline="")))
    assert [r["split"] for r in rows].count("test") == 6
    prov = list(csv.DictReader(open(out / "scenes.csv", newline="")))
    sides: dict[str, set] = {}
    for p in prov:
        sides.setdefault(p["group"], set()).add(p["split"])
    assert all(len(s) == 1 for s in sides.values()), "a drawing group straddles the split"
    test_bg = {p["background"] for p in prov if p["split"] == "test"}
    assert not test_bg & {p["background"] for p in prov if p["split"] != "test"}
    for r in rows:
        img = Image.open(out / r["path"])
        mask = np.asarray(Image.open(out / "masks" / (Path(r["path"]).stem + ".png")))
        assert img.size == (96, 96) and mask.shape == (96, 96)
        assert (mask > 127).mean() > 0.01
    # labtf reads the manifest as it is
    from labtf.manifest import read_manifest

    index = read_manifest(out / "manifest.csv")
    assert index.classes == ["bird", "drink", "fruit"] and len(index.subset("train")) == 12
