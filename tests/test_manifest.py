import csv

import pytest
from conftest import make_dataset

from labtf.errors import LabtfError
from labtf.manifest import apply_split, read_manifest, scan_folder, stratified_split


def test_scan_counts_and_skips(tiny_data):
    (tiny_data / "red_disc" / "zero.png").write_bytes(b"")
    (tiny_data / "red_disc" / "notes.txt").write_text("hi")
    (tiny_data / "blue_bar" / "fake.jpg").write_text("not a jpeg")
    idx = scan_folder(tiny_data)
    assert idx.classes == ["blue_bar", "green_square", "red_disc"]
    assert idx.counts() == {"blue_bar": 12, "green_square": 12, "red_disc": 12}
    skipped = {p.split("/")[-1] for p, _ in idx.skipped}
    assert skipped == {"zero.png", "notes.txt", "fake.jpg"}


def test_missing_dir_empty_class_single_class(tmp_path, tiny_data):
    with pytest.raises(LabtfError, match="does not exist"):
        scan_folder(tmp_path / "nowhere")
    (tiny_data / "empty_class").mkdir()
    with pytest.raises(LabtfError, match="'empty_class'.*no usable images"):
        scan_folder(tiny_data)
    one = make_dataset(tmp_path / "one")
    for d in ("green_square", "blue_bar"):
        for f in (one / d).iterdir():
            f.unlink()
        (one / d).rmdir()
    with pytest.raises(LabtfError, match="at least 2"):
        scan_folder(one)


def test_stratified_split_fractions_and_seed(tiny_data):
    idx = scan_folder(tiny_data)
    a = stratified_split(idx.samples, test_fraction=0.18, val_fraction=0.1, seed=1)
    b = stratified_split(idx.samples, test_fraction=0.18, val_fraction=0.1, seed=1)
    c = stratified_split(idx.samples, test_fraction=0.18, val_fraction=0.1, seed=2)
    assert a == b and a != c
    for label in idx.classes:
        sp = [s.split for s in a if s.label == label]
        assert sp.count("test") == 2 and sp.count("val") == 1 and sp.count("train") == 9


def test_split_reused_when_dataset_grows(tmp_path, tiny_data):
    split_file = tmp_path / "split.csv"
    first = apply_split(scan_folder(tiny_data), split_file, 0.18, 0.1, seed=0)
    before = {s.path: s.split for s in first.samples}
    make_dataset(tiny_data, per_class=30, seed=5)  # overwrites 000-011 with same names, adds more
    second = apply_split(scan_folder(tiny_data), split_file, 0.18, 0.1, seed=0)
    after = {s.path: s.split for s in second.samples}
    assert all(after[p] == sp for p, sp in before.items())
    assert len(after) == 90
    with open(split_file) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 90 and not rows[0]["path"].startswith("/")


def test_read_manifest_relative_and_bad_split(tmp_path, tiny_data):
    m = tmp_path / "m.csv"
    m.write_text("path,label,split\n" + "".join(
        f"data/{c}/000.jpg,{c},test\ndata/{c}/001.png,{c},train\n"
        for c in ("red_disc", "blue_bar")))
    idx = read_manifest(m)
    assert len(idx.samples) == 4 and idx.counts("test") == {"blue_bar": 1, "red_disc": 1}
    m.write_text("path,label,split\ndata/red_disc/000.jpg,red_disc,holdout\n")
    with pytest.raises(LabtfError, match="holdout"):
        read_manifest(m)
    m.write_text("file,label\n")
    with pytest.raises(LabtfError, match="lacks column"):
        read_manifest(m)
