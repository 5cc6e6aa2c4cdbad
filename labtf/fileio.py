"""Atomic file writes (a temp file in the target folder, then ``os.replace``) and reading a
user's JSON-or-text list files.

A reader never sees a half-written file, and a crash leaves the old file intact.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from labtf.errors import LabtfError


def write_bytes(path: str | os.PathLike, data: bytes, fsync: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (parents created).

    Args:
        path: target file.
        data: the bytes.
        fsync: flush to disk before the rename (for resumable manifests).

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | os.PathLike, text: str, fsync: bool = False) -> Path:
    """Write UTF-8 text atomically."""
    return write_bytes(path, text.encode("utf-8"), fsync)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write indented JSON atomically."""
    return write_text(path, json.dumps(data, indent=2) + "\n")


def read_json_or_text(path: str | os.PathLike, what: str, missing_hint: str) -> tuple[bool, Any]:
    """Read a file a person wrote: parsed JSON when it ends in ``.json``, else its text.

    Args:
        path: the file.
        what: what it is, for messages (``keywords file``).
        missing_hint: how to fix a missing file, appended to that message.

    Returns:
        ``(True, data)`` for a ``.json`` file, ``(False, text)`` otherwise.

    Raises:
        LabtfError: missing file or invalid JSON.
    """
    path = Path(path)
    if not path.is_file():
        raise LabtfError(f"{what} {path} does not exist; {missing_hint}")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() != ".json":
        return False, text
    try:
        return True, json.loads(text)
    except json.JSONDecodeError as exc:
        raise LabtfError(f"{what} {path}: invalid JSON ({exc})") from None
