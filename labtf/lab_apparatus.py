"""The poster's 15-class lab-apparatus image dataset as a TFDS builder.

Importing this module registers the builder ``lab_apparatus``::

    import labtf.lab_apparatus  # noqa: F401  (registers the builder)
    ds = tfds.load(
        "lab_apparatus", data_dir=data_dir, split="train",
        download_and_prepare_kwargs={"download_config":
            tfds.download.DownloadConfig(manual_dir=manual_dir)})

The images are not downloadable: see ``LabApparatus.MANUAL_DOWNLOAD_INSTRUCTIONS``.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import textwrap
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image, ImageOps

from labtf.errors import LabtfError
from labtf.images import IMAGE_SUFFIXES, check_pixels, to_rgb
from labtf.manifest import Sample, stratified_split

logger = logging.getLogger(__name__)

LAB_APPARATUS_CLASSES: Tuple[str, ...] = (
    "lyophilizer_dryer",
    "nebulizer_kit",
    "ultracentrifuge",
    "milling_machine",
    "condenser",
    "rotary_evaporator",
    "biosafety_suit",
    "three_neck_flask",
    "addition_separatory_funnel",
    "magnetic_stir_plate",
    "respirator",
    "graduated_cylinder",
    "biosafety_cabinet",
    "bioreactor_fermenter",
    "dna_rna_synthesizer",
)

# Poster display names, same order as LAB_APPARATUS_CLASSES.
LAB_APPARATUS_DISPLAY: Tuple[str, ...] = (
    "lyophilizer/dryer",
    "nebulizer kit",
    "ultracentrifuge",
    "milling machine",
    "condenser",
    "rotary evaporator",
    "biosafety suit",
    "3-neck flask",
    "add/sep funnel",
    "magnetic stir plate",
    "respirator",
    "graduated cylinder",
    "biosafety cabinet",
    "bioreactor/fermenter",
    "DNA/RNA synthesizer",
)

DATASET_NAME = "lab_apparatus"
MANIFEST_NAME = "manifest.csv"
TEST_FRACTION = 0.18
SPLIT_SEED = 1234
#: labtf's image endings plus a few more Pillow reads (JPEG variants, Netpbm).
IMAGE_EXTENSIONS = frozenset(IMAGE_SUFFIXES) | {".jpe", ".jfif", ".ppm", ".pgm", ".pbm"}
_JPEG_QUALITY = 95

Item = Tuple[Path, str, str]  # (absolute path, class name, relative filename)


def _normalize(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


# Folder / manifest label -> class name: exact names, display names and a few
# spellings ("3-neck flask" -> "3_neck_flask") are all accepted.
_ALIASES: Dict[str, str] = {}
for _cls, _disp in zip(LAB_APPARATUS_CLASSES, LAB_APPARATUS_DISPLAY):
    _ALIASES[_normalize(_cls)] = _cls
    _ALIASES[_normalize(_disp)] = _cls
_ALIASES["3_neck_flask"] = "three_neck_flask"
_ALIASES["addition_funnel"] = "addition_separatory_funnel"
_ALIASES["separatory_funnel"] = "addition_separatory_funnel"


def canonical_class(label: Union[str, int]) -> Optional[str]:
    """Maps a class name, display name or index to its folder-safe name.

    Args:
        label: e.g. ``"3-neck flask"``, ``"three_neck_flask"`` or ``7``.

    Returns:
        The entry of ``LAB_APPARATUS_CLASSES``, or None if unknown.
    """
    if isinstance(label, (int, np.integer)) or str(label).strip().isdigit():
        index = int(label)
        return LAB_APPARATUS_CLASSES[index] if 0 <= index < 15 else None
    return _ALIASES.get(_normalize(str(label)))


def display_name(label: Union[str, int]) -> str:
    """Returns the poster display name of a class name or index.

    Raises:
        KeyError: ``label`` is not one of the 15 classes.
    """
    name = canonical_class(label)
    if name is None:
        raise KeyError(f"unknown lab apparatus class {label!r}")
    return LAB_APPARATUS_DISPLAY[LAB_APPARATUS_CLASSES.index(name)]


def default_manual_dir(data_dir: Optional[os.PathLike] = None) -> Path:
    """The manual dir tfds uses when ``DownloadConfig.manual_dir`` is unset.

    tfds computes ``<data_dir>/downloads/manual`` where ``data_dir`` defaults
    to ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``.
    """
    root = data_dir or tfds.core.constants.get_default_data_dir()
    return Path(root).expanduser() / "downloads" / "manual"


def encoded_rgb(path: Path) -> bytes:
    """Reads an image file and returns JPEG or PNG bytes of its RGB version.

    Upright RGB JPEGs and PNGs are kept byte for byte; anything else (other
    modes, EXIF-rotated photos, GIF/BMP/TIFF/WebP) is converted to RGB by
    :func:`labtf.images.to_rgb` and re-encoded: PNG for lossless sources,
    JPEG (quality 95) for JPEGs.

    Raises:
        BadImage: more pixels than :data:`labtf.images.MAX_PIXELS`.
        OSError, ValueError: the file is not a readable image.
    """
    raw = path.read_bytes()
    with Image.open(io.BytesIO(raw)) as img:
        check_pixels(img, path)
        fmt = img.format
        img.load()  # Raises on truncated / corrupt data.
        orientation = img.getexif().get(0x0112, 1)
        upright = orientation in (None, 1)
        if fmt in ("JPEG", "PNG") and img.mode == "RGB" and upright:
            return raw
        rgb = to_rgb(img if upright else ImageOps.exif_transpose(img))
    buf = io.BytesIO()
    if fmt == "JPEG":
        rgb.save(buf, format="JPEG", quality=_JPEG_QUALITY)
    else:
        rgb.save(buf, format="PNG")
    return buf.getvalue()


def _resolve_root(manual_dir: Path) -> Path:
    """``<manual_dir>/lab_apparatus`` if it exists, else ``<manual_dir>``."""
    nested = manual_dir / DATASET_NAME
    return nested if nested.is_dir() else manual_dir


def _scan_class_folders(root: Path) -> Dict[str, List[str]]:
    """Finds image files in the class folders under ``root`` (recursively)."""
    files: Dict[str, List[str]] = {}
    for child in sorted(root.iterdir()):
        if not child.is_dir() or child.name.startswith("."):
            continue
        cls = canonical_class(child.name)
        if cls is None:
            logger.warning("lab_apparatus: ignoring unknown folder %s", child)
            continue
        found = [
            p.relative_to(root).as_posix()
            for p in sorted(child.rglob("*"))
            if p.is_file()
            and not p.name.startswith(".")
            and p.suffix.lower() in IMAGE_EXTENSIONS
        ]
        files.setdefault(cls, []).extend(found)
    missing = [c for c in LAB_APPARATUS_CLASSES if not files.get(c)]
    if len(missing) == len(LAB_APPARATUS_CLASSES):
        raise LabtfError(
            f"No lab apparatus class folders with images found in {root}.\n"
            + textwrap.dedent(LabApparatus.MANUAL_DOWNLOAD_INSTRUCTIONS)
        )
    if missing:
        logger.warning(
            "lab_apparatus: no images for %d classes: %s", len(missing), missing
        )
    return {c: files[c] for c in LAB_APPARATUS_CLASSES if files.get(c)}


def _read_manifest(root: Path) -> Dict[str, List[Item]]:
    """Parses ``manifest.csv`` (columns path,label,split) into split items.

    Raises:
        LabtfError: missing columns, unknown labels, bad split names or
            duplicated paths.
    """
    manifest = root / MANIFEST_NAME
    splits: Dict[str, List[Item]] = {}
    seen: set = set()
    with manifest.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        need = {"path", "label", "split"}
        if not reader.fieldnames or not need <= {h.strip() for h in reader.fieldnames}:
            raise LabtfError(
                f"{manifest}: header must contain path,label,split; "
                f"got {reader.fieldnames}"
            )
        for line, row in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
            rel, split = row["path"], row["split"].lower()
            cls = canonical_class(row["label"])
            if cls is None:
                raise LabtfError(
                    f"{manifest}:{line}: unknown label {row['label']!r}; use one "
                    f"of {', '.join(LAB_APPARATUS_CLASSES)}"
                )
            if not re.fullmatch(r"[a-z][a-z0-9_]*", split):
                raise LabtfError(
                    f"{manifest}:{line}: split {row['split']!r} must look like "
                    "train, test or validation"
                )
            path = (root / rel) if not os.path.isabs(rel) else Path(rel)
            key = path.resolve().as_posix()
            if key in seen:
                raise LabtfError(f"{manifest}:{line}: duplicated path {rel!r}")
            seen.add(key)
            filename = Path(rel).as_posix()
            splits.setdefault(split, []).append((path, cls, filename))
    if not splits:
        raise LabtfError(f"{manifest} lists no images")
    return splits


class LabApparatus(tfds.core.GeneratorBasedBuilder):
    """15-class laboratory apparatus photos (the poster's dataset)."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release.",
        "1.1.0": "Split by labtf.manifest.stratified_split (seed 1234, same 82/18 per class); "
                 "RGB by labtf.images.to_rgb (16-bit grey keeps its brightness).",
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
    The lab apparatus images are not downloadable. Put one folder per class,
    named exactly {", ".join(LAB_APPARATUS_CLASSES)}
    (images of any format/mode inside, subfolders allowed), either in
    `<manual_dir>/lab_apparatus/` or directly in `<manual_dir>/`.
    `<manual_dir>` is `DownloadConfig(manual_dir=...)` if given, otherwise
    tfds' default `<data_dir>/downloads/manual/`, i.e.
    `~/tensorflow_datasets/downloads/manual/` (or
    `$TFDS_DATA_DIR/downloads/manual/`). An optional `manifest.csv` next to
    the class folders with columns path,label,split (paths relative to it)
    fixes the splits; otherwise a seeded, stratified 82/18 train/test split
    is made per class.
    """

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        """This file. tfds' default lookup needs the optional
        ``importlib_resources`` package for builders outside tfds."""
        return epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "Photos of 15 kinds of laboratory apparatus, converted to RGB. "
                "Classes: " + ", ".join(LAB_APPARATUS_DISPLAY) + "."
            ),
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3)),
                    "label": tfds.features.ClassLabel(
                        names=list(LAB_APPARATUS_CLASSES)
                    ),
                    "filename": tfds.features.Text(),
                }
            ),
            supervised_keys=("image", "label"),
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(
        self, dl_manager: tfds.download.DownloadManager
    ) -> Dict[str, Iterator[Tuple[str, dict]]]:
        """Reads manifest.csv splits or makes the stratified 82/18 split."""
        root = _resolve_root(Path(dl_manager.manual_dir))
        if (root / MANIFEST_NAME).is_file():
            logger.info("lab_apparatus: using splits from %s", root / MANIFEST_NAME)
            items = _read_manifest(root)
        else:
            found = [Sample(rel, cls) for cls, rels in _scan_class_folders(root).items()
                     for rel in rels]
            items: Dict[str, List[Item]] = {}
            for s in stratified_split(found, test_fraction=TEST_FRACTION, val_fraction=0.0,
                                      seed=SPLIT_SEED):
                items.setdefault(s.split, []).append((root / s.path, s.label, s.path))
        counts = {name: len(v) for name, v in items.items()}
        logger.info("lab_apparatus: files per split before decoding: %s", counts)
        self.info.metadata["skipped_unreadable"] = {}
        return {
            name: self._generate_examples(name, split_items)
            for name, split_items in items.items()
        }

    def _generate_examples(
        self, split: str, items: List[Item]
    ) -> Iterator[Tuple[str, dict]]:
        """Yields RGB examples, skipping (and counting) unreadable files."""
        skipped = 0
        for path, cls, filename in items:
            try:
                image = encoded_rgb(path)
            except Exception as exc:  # noqa: BLE001 - any decoder failure
                skipped += 1
                logger.warning(
                    "lab_apparatus: skipping unreadable image %s (%s: %s)",
                    path, type(exc).__name__, exc,
                )
                continue
            yield filename, {"image": image, "label": cls, "filename": filename}
        self.info.metadata["skipped_unreadable"][split] = skipped
        if skipped:
            logger.warning(
                "lab_apparatus: skipped %d unreadable file(s) in split %r",
                skipped, split,
            )
