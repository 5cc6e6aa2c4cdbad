#!/usr/bin/env python3
"""Rebuild ``datasets/clipart/`` from Debian's ``openclipart-png`` package.

The dataset is a small, class-per-folder image classification set made of
public-domain clipart (see ``datasets/README.md``).  Which source file goes to
which class is fixed by ``datasets/clipart_sources.csv``; this script only
converts the listed files, so a rebuild is exact and auditable:

* every source PNG is composited onto a white background and converted to RGB;
* it is cropped to the bounding box of its non-transparent pixels plus a 5%
  white margin (many clipart canvases are mostly empty); sources whose
  non-white content is smaller than 64 px are refused;
* it is resized (Lanczos) so that the longer side is 256 px, keeping the
  aspect ratio;
* it is saved as baseline JPEG, quality 85, without metadata.

Usage::

    sudo apt-get install openclipart-png
    python datasets/build_clipart.py --force

Options: ``--source`` (default ``/usr/share/openclipart/png``), ``--out``
(default ``clipart/`` next to this script), ``--sources`` (the CSV),
``--force`` (replace an existing output folder), ``--write-checksums``
(maintainers: rewrite the sha256 column of the CSV from this build),
``--strict`` (exit non-zero if an output's sha256 differs from the CSV),
``--masks DIR`` (only write object masks ``DIR/<name>.png``: each drawing's
alpha channel through the same crop, margin and resize, for the pointing game
of ``labtf explain-eval --masks DIR``).

The output folder is built in a temporary sibling folder and renamed into
place only when every file was written, so an interrupted run never leaves a
half-built dataset behind.

Standard library and Pillow only.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import os
import shutil
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageChops

HERE = Path(__file__).resolve().parent
DEFAULT_SOURCE = Path("/usr/share/openclipart/png")
DEFAULT_OUT = HERE / "clipart"
DEFAULT_SOURCES = HERE / "clipart_sources.csv"
CSV_FIELDS = ["class", "source_path", "output_file", "sha256"]

LONG_SIDE = 256
JPEG_QUALITY = 85
MARGIN = 0.05          # fraction of the content's longer side
WHITE_THRESHOLD = 8    # per-channel distance from white that counts as content
MIN_CONTENT = 64       # px: refuse sources whose content is smaller than this
ALPHA_THRESHOLD = 8    # alpha at or below this counts as transparent margin
# The selected sources are all below 1 Mpx; _load refuses anything absurdly large (a few
# files in the package are hundreds of megapixels) from the header. Pillow's global limit is
# left alone: a test that runs this script must not change it for the rest of its process.
MAX_SOURCE_PIXELS = 20_000_000


def _load(src: Path) -> Image.Image:
    with Image.open(src) as im:
        if im.size[0] * im.size[1] > MAX_SOURCE_PIXELS:   # from the header, before decoding
            raise Image.DecompressionBombError(f"{src}: {im.size[0]}x{im.size[1]} px is more "
                                               f"than the {MAX_SOURCE_PIXELS} px allowed")
        im.load()
        return im.convert("RGBA")


def _on_white(rgba: Image.Image) -> Image.Image:
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    canvas.alpha_composite(rgba)
    return canvas.convert("RGB")


def _geometry(rgba: Image.Image, rgb: Image.Image, src: Path) -> tuple[tuple, int, tuple]:
    """(crop box, white margin in px, output size) for one source (``rgb``: it on white).

    Raises:
        ValueError: blank or tiny source.
    """
    # Refuse blank or tiny sources: measure what is not (nearly) white.
    diff = ImageChops.difference(rgb, Image.new("RGB", rgb.size, (255, 255, 255)))
    content = diff.convert("L").point(lambda v: 255 if v > WHITE_THRESHOLD else 0)
    cbox = content.getbbox()
    if cbox is None:
        raise ValueError(f"{src}: image is blank")
    if max(cbox[2] - cbox[0], cbox[3] - cbox[1]) < MIN_CONTENT:
        raise ValueError(f"{src}: content is only {cbox[2] - cbox[0]}x"
                         f"{cbox[3] - cbox[1]} px")
    # Crop away fully transparent margins only: white parts of the drawing
    # itself (e.g. the white field of a flag) are kept.
    bbox = _opaque(rgba).getbbox()
    left, top, right, bottom = bbox
    w, h = right - left, bottom - top
    pad = int(round(MARGIN * max(w, h)))
    cw, ch = w + 2 * pad, h + 2 * pad
    scale = LONG_SIDE / max(cw, ch)
    return bbox, pad, (max(1, round(cw * scale)), max(1, round(ch * scale)))


def _opaque(rgba: Image.Image) -> Image.Image:
    return rgba.getchannel("A").point(lambda v: 255 if v > ALPHA_THRESHOLD else 0)


def _place(layer: Image.Image, bbox: tuple, pad: int, size: tuple, fill) -> Image.Image:
    """Crop to ``bbox``, pad by ``pad`` with ``fill``, resize (Lanczos) to ``size``."""
    w, h = bbox[2] - bbox[0], bbox[3] - bbox[1]
    cropped = Image.new(layer.mode, (w + 2 * pad, h + 2 * pad), fill)
    cropped.paste(layer.crop(bbox), (pad, pad))
    return cropped.resize(size, Image.Resampling.LANCZOS)


def convert(src: Path) -> bytes:
    """Return the JPEG bytes for one source image."""
    rgba = _load(src)
    rgb = _on_white(rgba)
    bbox, pad, size = _geometry(rgba, rgb, src)
    # Pad with white (not with neighbouring pixels) so the margin is uniform.
    resized = _place(rgb, bbox, pad, size, (255, 255, 255))
    buf = io.BytesIO()
    resized.save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return buf.getvalue()


def object_mask(src: Path) -> bytes:
    """PNG bytes (L, 0/255) of the drawing's opaque pixels, aligned with :func:`convert`.

    The object mask a pointing game needs: the source's alpha channel put through
    the same crop, margin and resize as the image.
    """
    rgba = _load(src)
    bbox, pad, size = _geometry(rgba, _on_white(rgba), src)
    resized = _place(_opaque(rgba), bbox, pad, size, 0)
    buf = io.BytesIO()
    resized.point(lambda v: 255 if v >= 128 else 0).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def read_sources(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise SystemExit(f"{path}: no rows")
    missing = set(CSV_FIELDS) - set(rows[0])
    if missing:
        raise SystemExit(f"{path}: missing columns {sorted(missing)}")
    seen = set()
    for row in rows:
        key = (row["class"], row["output_file"])
        if key in seen:
            raise SystemExit(f"{path}: duplicate output {key}")
        seen.add(key)
        for part in (row["class"], row["output_file"]):
            if not part or "/" in part or "\\" in part or part.startswith("."):
                raise SystemExit(f"{path}: bad name {part!r}")
    return rows


def write_sources(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row[k] for k in CSV_FIELDS})
    os.replace(tmp, path)


def write_masks(source: Path, rows: list[dict], folder: Path) -> int:
    """Write one object mask per listed image into ``folder`` (existing masks are kept)."""
    if not source.is_dir():
        print(f"error: {source} not found; install it with "
              "`sudo apt-get install openclipart-png`", file=sys.stderr)
        return 2
    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    for row in rows:
        dest = folder / f"{Path(row['output_file']).stem}.png"
        if dest.exists():
            continue
        try:
            data = object_mask(source / row["source_path"])
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise SystemExit(f"error: {exc}") from None
        tmp = dest.with_name(f".{dest.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, dest)
        written += 1
    print(f"{written} masks written to {folder} ({len(rows) - written} already there)")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE,
                    help="openclipart-png root (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT,
                    help="output folder (default: %(default)s)")
    ap.add_argument("--sources", type=Path, default=DEFAULT_SOURCES,
                    help="CSV listing class,source_path,output_file,sha256")
    ap.add_argument("--force", action="store_true",
                    help="replace the output folder if it exists")
    ap.add_argument("--write-checksums", action="store_true",
                    help="rewrite the sha256 column of the CSV from this build")
    ap.add_argument("--strict", action="store_true",
                    help="fail if any output differs from the CSV's sha256")
    ap.add_argument("--masks", type=Path, default=None, metavar="DIR",
                    help="write object masks DIR/<name>.png (the drawings' alpha, aligned "
                         "with the images; for `labtf explain-eval --masks`) and stop")
    args = ap.parse_args(argv)
    if args.masks is not None:
        return write_masks(args.source, read_sources(args.sources), args.masks)

    out = args.out.resolve()
    if out.exists() and not args.force:
        print(f"error: {out} exists; pass --force to replace it", file=sys.stderr)
        return 2
    if not args.source.is_dir():
        print(f"error: {args.source} not found; install it with "
              "`sudo apt-get install openclipart-png`", file=sys.stderr)
        return 2

    rows = read_sources(args.sources)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.build-", dir=out.parent))
    mismatched = []
    try:
        for row in rows:
            src = args.source / row["source_path"]
            try:
                data = convert(src)
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                raise SystemExit(f"error: {exc}") from None
            digest = hashlib.sha256(data).hexdigest()
            if row.get("sha256") and row["sha256"] != digest:
                mismatched.append(row["source_path"])
            row["sha256"] = digest
            dest_dir = tmp / row["class"]
            dest_dir.mkdir(exist_ok=True)
            (dest_dir / row["output_file"]).write_bytes(data)
        if mismatched and args.strict and not args.write_checksums:
            raise SystemExit(
                f"error: {len(mismatched)} outputs differ from {args.sources} "
                f"(first: {mismatched[0]}); a different Pillow/libjpeg can "
                "change JPEG bytes")
        # Swap into place: old -> backup, new -> out, drop backup.
        backup = None
        if out.exists():
            backup = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            backup.rmdir()
            os.rename(out, backup)
        os.rename(tmp, out)
        tmp = None
        if backup is not None:
            shutil.rmtree(backup)
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp)

    if args.write_checksums:
        write_sources(args.sources, rows)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["class"]] = counts.get(row["class"], 0) + 1
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    for name in sorted(counts):
        print(f"{name:20s} {counts[name]:4d}")
    print(f"{'total':20s} {len(rows):4d} images, {total} bytes -> {out}")
    if mismatched:
        print(f"warning: {len(mismatched)} outputs differ from the recorded sha256 "
              "(different Pillow/libjpeg?)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
