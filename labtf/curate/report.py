"""Counts before and after every data step, in ``WORKSPACE/report.json`` and ``report.md``.

Steps (in pipeline order): ``collect`` (candidates -> downloaded), ``filter``
(corrupt / too small / extreme aspect), ``near_duplicates`` (groups found;
extras moved only with ``--drop-duplicates``), ``outliers`` (images flagged for review as
closer to another class or far from their own; nothing moved), ``review`` (a person's
rejections) and ``split``. Re-running a step replaces its entry.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from labtf.fileio import write_text

STEP_ORDER = ("collect", "filter", "near_duplicates", "outliers", "review", "split")
REPORT_JSON = "report.json"
REPORT_MD = "report.md"


def load_report(workspace: str | os.PathLike) -> dict:
    """The report so far (empty when none)."""
    p = Path(workspace) / REPORT_JSON
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {"steps": {}}


def record_step(workspace: str | os.PathLike, step: str, counts: dict) -> dict:
    """Store one step's counts (must hold ``before`` and ``after``) and rewrite both reports.

    Returns:
        The whole report.
    """
    workspace = Path(workspace)
    report = load_report(workspace)
    report["steps"][step] = {**counts, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_text(workspace / REPORT_JSON, json.dumps(report, indent=2, sort_keys=True) + "\n")
    write_text(workspace / REPORT_MD, markdown(report))
    return report


def markdown(report: dict) -> str:
    """Render the report: one row per step, then images per class after each step."""
    steps = [s for s in STEP_ORDER if s in report["steps"]] + \
        sorted(s for s in report["steps"] if s not in STEP_ORDER)
    lines = ["# Data report", "", "| step | before | after | removed | details |",
             "|---|---:|---:|---:|---|"]
    for s in steps:
        c = report["steps"][s]
        skip = {"before", "after", "per_class", "time", "failure_reasons", "providers"}
        details = ", ".join(f"{k} {v}" for k, v in c.items() if k not in skip
                            and not isinstance(v, (dict, list)))
        removed = c["before"] - c["after"] if s != "split" else 0
        lines.append(f"| {s} | {c['before']} | {c['after']} | {removed} | {details} |")
    if "collect" in report["steps"] and report["steps"]["collect"].get("failure_reasons"):
        lines += ["", "Download failures by reason: " + ", ".join(
            f"{k or 'other'} {v}" for k, v in report["steps"]["collect"]["failure_reasons"].items())]
    with_classes = [s for s in steps if isinstance(report["steps"][s].get("per_class"), dict)]
    classes = sorted({c for s in with_classes for c in report["steps"][s]["per_class"]})
    if classes:
        lines += ["", "Images per class after each step:", "",
                  "| class | " + " | ".join(with_classes) + " |",
                  "|---|" + "---:|" * len(with_classes)]
        for c in classes:
            cells = [str(report["steps"][s]["per_class"].get(c, "")) for s in with_classes]
            lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
