"""Tests for the lab_apparatus TFDS builder (offline, tiny synthetic images)."""

from __future__ import annotations

import io
import socket
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")
from PIL import Image  # noqa: E402

from labtf import lab_apparatus as la  # noqa: E402  (registers the builder)
from labtf.manifest import Sample, stratified_split  # noqa: E402

CLASSES = ("condenser", "respirator", "three_neck_flask")
PER_CLASS = 10


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails fast instead of hanging if anything tries to reach the network."""

    def refuse(*args, **kwargs):
        raise OSError("network access attempted in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _rgb(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def _write_class(folder: Path, seed: int, odd_modes: bool) -> Dict[str, tuple]:
    """Writes PER_CLASS readable images; returns filename -> expected (H, W)."""
    folder.mkdir(parents=True)
    sizes: Dict[str, tuple] = {}
    n = 0
    if odd_modes:
        base = _rgb(9, 7, seed)
        base.convert("L").save(folder / "gray.png")
        rgba = base.convert("RGBA")
        rgba.putalpha(128)
        rgba.save(folder / "rgba.png")
        base.convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "pal.gif")
        base.convert("CMYK").save(folder / "cmyk.jpg", quality=90)
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90: stored 9x7 (WxH) shows as 7x9
        base.save(folder / "rotated.jpg", exif=exif.tobytes())
        for name in ("gray.png", "rgba.png", "pal.gif", "cmyk.jpg"):
            sizes[name] = (7, 9)
        sizes["rotated.jpg"] = (9, 7)
        n = 5
        (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
        (folder / "notes.txt").write_text("ignored, not an image")
    for i in range(n, PER_CLASS):
        name = f"img_{i:02d}." + ("png" if i % 2 else "jpg")
        _rgb(8 + i, 6 + i, seed + i).save(folder / name)
        sizes[name] = (6 + i, 8 + i)
    return {f"{folder.name}/{k}": v for k, v in sizes.items()}


def _download_config(manual_dir: Path) -> "tfds.download.DownloadConfig":
    return tfds.download.DownloadConfig(manual_dir=str(manual_dir), try_download_gcs=False)


def test_class_folders_prepare_and_load(tmp_path: Path) -> None:
    manual = tmp_path / "manual"
    expected: Dict[str, tuple] = {}
    for i, cls in enumerate(CLASSES):
        expected.update(_write_class(manual / "lab_apparatus" / cls, 100 * i, i == 0))
    data_dir = tmp_path / "data"
    builder = tfds.builder("lab_apparatus", data_dir=str(data_dir))
    assert isinstance(builder, la.LabApparatus)
    assert str(builder.version) == "1.1.0"
    builder.download_and_prepare(download_config=_download_config(manual))

    splits = tfds.load("lab_apparatus", data_dir=str(data_dir), try_gcs=False)
    assert set(splits) == {"train", "test"}
    seen: Dict[str, List[str]] = {"train": [], "test": []}
    names = builder.info.features["label"].names
    assert names == list(la.LAB_APPARATUS_CLASSES)
    for split, ds in splits.items():
        for ex in tfds.as_numpy(ds):
            image, fname = ex["image"], ex["filename"].decode()
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
            assert image.shape[:2] == expected[fname], fname
            assert names[ex["label"]] == fname.split("/")[0]
            seen[split].append(fname)

    all_files = seen["train"] + seen["test"]
    assert sorted(all_files) == sorted(expected)  # corrupt + .txt skipped
    n_test = len(seen["test"])
    assert 0.1 <= n_test / len(all_files) <= 0.3
    for cls in CLASSES:  # stratified: every class in both splits
        assert any(f.startswith(cls + "/") for f in seen["test"])
        assert sum(f.startswith(cls + "/") for f in seen["train"]) >= 7
    skipped = builder.info.metadata["skipped_unreadable"]
    assert sum(skipped.values()) == 1

    # The split is labtf's stratified split (seed 1234) of every file found, before decoding.
    found = [Sample(f, f.split("/")[0]) for f in [*expected, f"{CLASSES[0]}/broken.jpg"]]
    made = stratified_split(found, test_fraction=la.TEST_FRACTION, val_fraction=0.0,
                            seed=la.SPLIT_SEED)
    want = {s.path for s in made if s.split == "test"}
    assert set(seen["test"]) == want


def test_manifest_splits_via_tfds_load(tmp_path: Path) -> None:
    manual = tmp_path / "manual"
    _write_class(manual / "respirator", 7, False)
    _write_class(manual / "graduated_cylinder", 9, False)
    rows = ["path,label,split"]
    for i in range(PER_CLASS):
        ext = "png" if i % 2 else "jpg"
        split = "validation" if i < 3 else "train"
        rows.append(f"respirator/img_{i:02d}.{ext},respirator,{split}")
        rows.append(f"graduated_cylinder/img_{i:02d}.{ext},graduated cylinder,{split}")
    (manual / "manifest.csv").write_text("\n".join(rows) + "\n")

    ds, info = tfds.load(
        "lab_apparatus",
        data_dir=str(tmp_path / "data"),
        split="validation",
        as_supervised=True,
        with_info=True,
        try_gcs=False,
        download_and_prepare_kwargs={"download_config": _download_config(manual)},
    )
    assert set(info.splits) == {"train", "validation"}
    assert info.splits["train"].num_examples == 14
    labels = sorted(int(label) for _, label in tfds.as_numpy(ds))
    cyl = la.LAB_APPARATUS_CLASSES.index("graduated_cylinder")
    resp = la.LAB_APPARATUS_CLASSES.index("respirator")
    assert labels == sorted([cyl] * 3 + [resp] * 3)


def test_helpers_and_missing_manual_dir(tmp_path: Path) -> None:
    assert len(la.LAB_APPARATUS_CLASSES) == len(la.LAB_APPARATUS_DISPLAY) == 15
    assert la.display_name("three_neck_flask") == "3-neck flask"
    assert la.canonical_class("3-neck flask") == "three_neck_flask"
    assert la.canonical_class("DNA/RNA synthesizer") == "dna_rna_synthesizer"
    assert la.canonical_class(0) == "lyophilizer_dryer"
    assert la.default_manual_dir(tmp_path) == tmp_path / "downloads" / "manual"
    builder = tfds.builder("lab_apparatus", data_dir=str(tmp_path))
    with pytest.raises(AssertionError, match="lab_apparatus"):
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(try_download_gcs=False)
        )
    raw = tmp_path / "cmyk.jpg"
    _rgb(5, 4, 0).convert("CMYK").save(raw)
    with Image.open(io.BytesIO(la.encoded_rgb(raw))) as img:
        assert img.mode == "RGB" and img.size == (5, 4)
    Image.fromarray(np.full((4, 5), 128 * 257, np.uint16)).save(tmp_path / "g16.png")
    with Image.open(io.BytesIO(la.encoded_rgb(tmp_path / "g16.png"))) as img:
        assert img.mode == "RGB" and (np.asarray(img) == 128).all()  # 16-bit: scaled, not clipped
