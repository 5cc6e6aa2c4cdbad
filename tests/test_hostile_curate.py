"""Hostile curate inputs: bad rejection lists, links out of the workspace, huge images."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labtf.curate import apply_rejections, curate
from labtf.errors import LabtfError

ROOT = Path(__file__).resolve().parents[1]


def _workspace(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for label in ("bird", "fruit"):
        d = root / "images" / label
        d.mkdir(parents=True)
        for i in range(3):
            px = (rng.random((80, 80, 3)) * 255).astype(np.uint8)
            Image.fromarray(px).save(d / f"{i}.png")
    return root


def _tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _list(tmp_path: Path, *paths: str) -> str:
    f = tmp_path / "list.json"
    f.write_text(json.dumps({"rejected": list(paths)}))
    return str(f)


@pytest.mark.parametrize("bad", ["../x", "images/../../x", "/etc/passwd", "images/bird/none.png",
                                 "images/bird", "rejected/bird/0.png"])
def test_one_bad_path_moves_nothing(tmp_path, bad):
    work = _workspace(tmp_path / "w")
    before = _tree(work)
    with pytest.raises(LabtfError, match="nothing was moved") as exc:
        apply_rejections(work, [_list(tmp_path, "images/bird/0.png", bad, "images/fruit/1.png")])
    assert bad in str(exc.value) and "\n" not in str(exc.value)
    assert _tree(work) == before


def test_every_move_is_in_report_json(tmp_path):
    work = _workspace(tmp_path / "w")
    apply_rejections(work, [_list(tmp_path, "images/bird/0.png", "images/fruit/1.png")])
    apply_rejections(work, [_list(tmp_path, "images/bird/2.png")])
    review = json.loads((work / "report.json").read_text())["steps"]["review"]
    assert review["moves"] == [
        {"from": "images/bird/0.png", "to": "rejected/bird/0.png"},
        {"from": "images/fruit/1.png", "to": "rejected/fruit/1.png"},
        {"from": "images/bird/2.png", "to": "rejected/bird/2.png"}]
    assert review["rejected"] == 3 and review["before"] == 6 and review["after"] == 3


def test_symlinked_class_folder_is_refused(tmp_path):
    work = _workspace(tmp_path / "w")
    outside = tmp_path / "outside"
    outside.mkdir()
    Image.new("RGB", (4, 4)).save(outside / "tiny.png")          # 'too_small': would be moved
    (work / "images" / "cat").symlink_to(outside, target_is_directory=True)
    for call in (lambda: curate(work, review=False, embed=False),
                 lambda: apply_rejections(work, [_list(tmp_path, "images/cat/tiny.png")])):
        with pytest.raises(LabtfError, match="outside .*copy the images in or remove the link"):
            call()
    assert (outside / "tiny.png").is_file() and not (work / "rejected").exists()


def test_symlinked_rejected_folder_is_refused(tmp_path):
    work = _workspace(tmp_path / "w")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (work / "rejected").symlink_to(outside, target_is_directory=True)
    with pytest.raises(LabtfError, match="rejected is a link to"):
        apply_rejections(work, [_list(tmp_path, "images/bird/0.png")])
    assert (work / "images/bird/0.png").is_file() and not any(outside.iterdir())


def test_nested_link_out_of_the_workspace_is_refused(tmp_path):
    work = _workspace(tmp_path / "w")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "a.png").write_bytes((work / "images/bird/0.png").read_bytes())
    (work / "images" / "bird" / "sub").symlink_to(outside, target_is_directory=True)
    with pytest.raises(LabtfError, match="outside"):
        apply_rejections(work, [_list(tmp_path, "images/bird/sub/a.png")])
    assert (outside / "a.png").is_file()


def _png_bomb(path: Path, side: int) -> Path:
    """A 1-bit PNG declaring side x side pixels, all zero: a few KB on disk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (len(data).to_bytes(4, "big") + kind + data
                + zlib.crc32(kind + data).to_bytes(4, "big"))

    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = side.to_bytes(4, "big") * 2 + bytes([1, 0, 0, 0, 0])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body)
                     + chunk(b"IEND", b""))
    return path


def test_huge_image_is_filtered_not_decoded(tmp_path):
    work = _workspace(tmp_path / "w")
    _png_bomb(work / "images" / "bird" / "bomb.png", 13000)
    assert (work / "images/bird/bomb.png").stat().st_size < 100_000
    c = curate(work, review=False, embed=False)
    assert c["after"] == 6
    assert (work / "rejected/bird/bomb.png").is_file()
    steps = json.loads((work / "report.json").read_text())["steps"]
    assert steps["filter"]["too_large"] == 1


def test_cli_bad_list_is_one_line(tmp_path):
    work = _workspace(tmp_path / "w")
    before = _tree(work)
    proc = subprocess.run([sys.executable, str(ROOT / "cli.py"), "curate", str(work), "--apply",
                           _list(tmp_path, "images/bird/0.png", "../x")],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: 1 path(s)")
    assert _tree(work) == before


def test_review_index_never_ends_on_an_empty_list(tmp_path):
    from labtf.curate.review import write_review_pages

    work = _workspace(tmp_path / "w")
    items = [(f"images/{c}/{i}.png", c) for c in ("bird", "fruit") for i in range(3)]
    page = write_review_pages(work, items, []).read_text()
    assert "span classes" not in page and "<ul></ul>" not in page
    assert "No near-duplicate groups." in page
    groups = [{"group": 0, "paths": ["images/bird/0.png", "images/fruit/0.png"],
               "labels": ["bird", "fruit"], "cross_class": True}]
    page = write_review_pages(work, items, groups).read_text()
    assert "1 span classes" in page and "group 0 (bird, fruit): images/bird/0.png" in page


def test_outlier_badges_give_their_reason(tmp_path):
    from labtf.curate.review import write_review_pages

    work = _workspace(tmp_path / "w")
    items = [(f"images/{c}/{i}.png", c) for c in ("bird", "fruit") for i in range(3)]
    flags = [{"path": "images/fruit/1.png", "label": "fruit", "reason": "closer to another class",
              "own_similarity": 0.41, "closest_class": "bird", "closest_similarity": 0.63, "z": 2.2},
             {"path": "images/fruit/2.png", "label": "fruit", "reason": "far from its class",
              "own_similarity": 0.2, "closest_class": "bird", "closest_similarity": 0.1, "z": 4.5}]
    write_review_pages(work, items, [], flags)
    page = (work / "curation/review/fruit.html").read_text()
    assert "looks like bird (0.63 vs 0.41 own)" in page and "far from its class (z 4.5)" in page
    assert "more similar (0.63) than its nearest &#x27;fruit&#x27; images (0.41)" in page
