"""The collection manifest: an append-only JSONL ledger, crash-safe.

Every line is one JSON record about one image; the last record for a key
(``url``) wins. Lines are appended, flushed and fsync'ed one at a time, so a
killed process leaves at most one torn last line, which reading skips. The
curation step appends records too (``status: rejected`` with the new path),
so the ledger is the audit trail of where every file came from and went.

Record fields: ``url, provider, query, label, license, license_version,
license_id`` (canonical, e.g. ``CC-BY-SA-4.0``), ``license_url, attribution,
attribution_required, credit, creator, creator_url, source, landing_url, title, status,
path, sha256, bytes, width, height, error, duplicate_of, reason, time``.
``status`` is one of :data:`STATUSES`.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Iterable

log = logging.getLogger(__name__)

LEDGER_NAME = "manifest.jsonl"

#: ok: file kept in images/; duplicate: same bytes as another record; failed: gave up
#: (reason in ``error``); rejected: moved to rejected/ by curation.
STATUSES = ("ok", "duplicate", "failed", "rejected")


class Ledger:
    """Append-only JSONL manifest with tolerant reading.

    Args:
        path: the ``.jsonl`` file (created on first append).
        fsync: fsync after every line (durable against power loss, slower).
    """

    def __init__(self, path: str | os.PathLike, fsync: bool = True):
        self.path = Path(path)
        self.fsync = fsync
        self._lock = threading.Lock()
        self._tail_checked = False

    def read(self) -> list[dict]:
        """All intact records in file order; a torn or corrupt line is skipped with a warning."""
        if not self.path.is_file():
            return []
        out = []
        with open(self.path, "rb") as fh:
            for i, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except (UnicodeDecodeError, json.JSONDecodeError):
                    log.warning("%s line %d: unreadable record skipped (torn write?)", self.path, i)
                    continue
                if isinstance(rec, dict):
                    out.append(rec)
        return out

    def latest(self) -> dict[str, dict]:
        """The last record per ``url`` (insertion order of first appearance)."""
        state: dict[str, dict] = {}
        for rec in self.read():
            key = rec.get("url") or rec.get("path")
            if key:
                state[key] = rec
        return state

    def append(self, records: dict | Iterable[dict]) -> None:
        """Append one or more records durably."""
        if isinstance(records, dict):
            records = [records]
        lines = []
        for rec in records:
            rec = dict(rec)
            rec.setdefault("time", time.strftime("%Y-%m-%dT%H:%M:%S"))
            lines.append(json.dumps(rec, sort_keys=True, ensure_ascii=False) + "\n")
        if not lines:
            return
        data = "".join(lines).encode("utf-8")
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self._tail_checked:
                self._repair_tail()
                self._tail_checked = True
            with open(self.path, "ab") as fh:
                fh.write(data)
                fh.flush()
                if self.fsync:
                    os.fsync(fh.fileno())

    def _repair_tail(self) -> None:
        """End a torn last line with a newline so the next record starts clean."""
        try:
            with open(self.path, "rb+") as fh:
                fh.seek(0, os.SEEK_END)
                if fh.tell() == 0:
                    return
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    fh.write(b"\n")
        except FileNotFoundError:
            pass
