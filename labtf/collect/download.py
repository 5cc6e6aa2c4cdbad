"""Concurrent, resumable image downloader writing class folders and the ledger.

Each candidate URL ends as exactly one ledger record: ``ok`` (file saved under
``images/<label>/<sha256[:16]>.<ext>``), ``duplicate`` (same bytes as a file
already kept or rejected) or ``failed`` (reason in ``error``). Files are written
to a temporary name and hard-linked into place, so a name is never overwritten
and a killed run leaves no half file; on resume, URLs with a record are
skipped and a file that was saved but not yet recorded is adopted.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
import time
import uuid
from collections import Counter
from dataclasses import asdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from labtf.collect.http import FetchError, HttpClient
from labtf.collect.ledger import Ledger
from labtf.collect.base import Candidate
from labtf.hashing import sha256_file

log = logging.getLogger(__name__)

#: Pillow format -> file ending of the saved file; other formats are refused.
FORMAT_EXT = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp", "BMP": ".bmp",
              "TIFF": ".tif", "MPO": ".jpg"}
PART_PREFIX = ".part-"


def decode_check(data: bytes) -> tuple[str, int, int]:
    """Decode image bytes fully with Pillow.

    Returns:
        (Pillow format, width, height).

    Raises:
        ValueError: not a decodable image of a supported format.
    """
    from labtf.images import MAX_PIXELS   # one cap for every reader

    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt, (w, h) = img.format or "", img.size
            too_big = w * h > MAX_PIXELS   # from the header, before decoding
            if not too_big:
                img.load()
    except Exception as exc:  # Pillow raises many types for bad data
        raise ValueError(f"not a decodable image ({exc.__class__.__name__}: {exc})") from None
    if too_big:
        raise ValueError(f"image is {w}x{h} px, more than {MAX_PIXELS // 1_000_000} MP; not decoded")
    if fmt not in FORMAT_EXT:
        raise ValueError(f"unsupported image format '{fmt}'")
    return fmt, w, h


class Downloader:
    """Download candidates into ``images_dir/<label>/`` with a ledger.

    Args:
        images_dir: root of the class folders.
        ledger: the collection ledger (read for resume, appended per image).
        client: HTTP client (timeouts, retries, rate limit, size cap).
        workers: concurrent downloads.
        retry_failed: on resume, try URLs again whose last record is ``failed``.
        progress_every: seconds between progress log lines.
    """

    def __init__(self, images_dir: str | os.PathLike, ledger: Ledger, client: HttpClient,
                 workers: int = 8, retry_failed: bool = False, progress_every: float = 5.0):
        self.images_dir = Path(images_dir)
        self.ledger = ledger
        self.client = client
        self.workers = max(1, int(workers))
        self.progress_every = progress_every
        self._lock = threading.Lock()
        self.state = ledger.latest()
        self.by_sha: dict[str, str] = {}
        for rec in self.state.values():
            if rec.get("status") in ("ok", "rejected") and rec.get("sha256"):
                self.by_sha.setdefault(rec["sha256"], rec.get("path", ""))
        final = ("ok", "duplicate", "rejected") + (() if retry_failed else ("failed",))
        self.done = {u for u, r in self.state.items() if r.get("status") in final}
        self.counts: Counter = Counter()

    def clean_partials(self) -> int:
        """Remove temporary files a killed run left; returns how many."""
        n = 0
        if self.images_dir.is_dir():
            for p in self.images_dir.rglob(f"{PART_PREFIX}*"):
                p.unlink(missing_ok=True)
                n += 1
        if n:
            log.info("removed %d partial download(s) from an interrupted run", n)
        return n

    def run(self, jobs: list[tuple[str, Candidate]]) -> Counter:
        """Download all jobs not already recorded.

        Args:
            jobs: (label, candidate) pairs.

        Returns:
            Counter of statuses for this run (plus ``skipped`` for already recorded URLs).
        """
        self.clean_partials()
        todo = [(lab, c) for lab, c in jobs if c.url not in self.done]
        self.counts["skipped"] = len(jobs) - len(todo)
        if self.counts["skipped"]:
            log.info("resume: %d URL(s) already recorded, %d to fetch", self.counts["skipped"], len(todo))
        start = last = time.monotonic()
        with ThreadPoolExecutor(self.workers, thread_name_prefix="labtf-dl") as pool:
            for i, status in enumerate(pool.map(lambda job: self._one(*job), todo), start=1):
                self.counts[status] += 1
                now = time.monotonic()
                if now - last >= self.progress_every or i == len(todo):
                    last = now
                    log.info("download: %d/%d (ok %d, duplicate %d, failed %d) %.1f img/s", i,
                             len(todo), self.counts["ok"], self.counts["duplicate"],
                             self.counts["failed"], i / max(now - start, 1e-9))
        return self.counts

    def _record(self, label: str, c: Candidate, status: str, **extra) -> str:
        rec = {**asdict(c), "license_id": c.licence, "label": label, "status": status, **extra}
        self.ledger.append(rec)
        return status

    def _one(self, label: str, c: Candidate) -> str:
        try:
            resp = self.client.get(c.url, accept="image/*", type_prefixes=("image/",))
            fmt, w, h = decode_check(resp.body)
        except FetchError as exc:
            return self._record(label, c, "failed", error=str(exc), http_status=exc.status)
        except ValueError as exc:
            return self._record(label, c, "failed", error=str(exc))
        sha = hashlib.sha256(resp.body).hexdigest()
        folder = self.images_dir / label
        dst = folder / f"{sha[:16]}{FORMAT_EXT[fmt]}"
        with self._lock:
            known = self.by_sha.get(sha)
            if known is None:
                self.by_sha[sha] = str(dst.relative_to(self.images_dir.parent))
        facts = {"sha256": sha, "bytes": len(resp.body), "width": w, "height": h,
                 "format": fmt, "final_url": resp.final_url, "attempts": resp.attempts}
        if known is not None:
            return self._record(label, c, "duplicate", duplicate_of=known, **facts)
        try:
            saved = self._save(folder, dst, resp.body, sha)
        except OSError as exc:
            with self._lock:
                self.by_sha.pop(sha, None)
            return self._record(label, c, "failed", error=f"cannot write file: {exc}")
        rel = str(saved.relative_to(self.images_dir.parent))
        return self._record(label, c, "ok", path=rel, **facts)

    def _save(self, folder: Path, dst: Path, data: bytes, sha: str) -> Path:
        """Write ``data`` to ``dst`` without ever replacing an existing file."""
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"{PART_PREFIX}{uuid.uuid4().hex}"
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            for k in range(100):
                target = dst if k == 0 else dst.with_name(f"{dst.stem}_{k}{dst.suffix}")
                if target.exists():
                    if sha256_file(target) == sha:
                        log.debug("adopting %s saved by an interrupted run", target)
                        return target
                    continue
                try:
                    os.link(tmp, target)
                    return target
                except FileExistsError:
                    continue
            raise OSError(f"no free file name for {dst}")
        finally:
            tmp.unlink(missing_ok=True)
