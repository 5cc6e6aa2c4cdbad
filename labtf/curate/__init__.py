"""Curate a collected dataset: quality filter, near-duplicate groups, human review, grouped split.

Works on a collect workspace (``WORK/images/<class>/``, ``WORK/manifest.jsonl``);
a plain class-folder dataset becomes one when placed at ``WORK/images``.
Files are never deleted: rejected files move to ``WORK/rejected/<class>/`` and
the move is recorded in the ledger. Counts go to ``WORK/report.json/.md``.
"""
from __future__ import annotations

from labtf.curate.core import apply_rejections, curate
from labtf.curate.phash import NearDuplicateThresholds
from labtf.curate.split import grouped_split

__all__ = ["curate", "apply_rejections", "grouped_split", "NearDuplicateThresholds"]
