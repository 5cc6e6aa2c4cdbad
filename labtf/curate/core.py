"""The curate step: filter unusable images, find near-duplicate groups, write review pages.

Outputs in ``WORK/curation/``: ``groups.json`` (near-duplicate groups and pairs,
read by the split), ``outliers.json`` (images flagged as likely irrelevant or mislabelled, with
the embedding stage) and ``review/index.html`` + one page per class. ``apply_rejections`` moves the
files a person rejected to ``WORK/rejected/``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from labtf.collect.ledger import LEDGER_NAME, Ledger
from labtf.curate import phash
from labtf.curate.report import load_report, record_step
from labtf.errors import LabtfError
from labtf.fileio import read_json_or_text, write_text
from labtf.hashing import sha256_file
from labtf.images import BadImage, check_pixels, is_image_name

log = logging.getLogger(__name__)

GROUPS_NAME = "groups.json"
OUTLIERS_NAME = "outliers.json"


def workspace_images(work: str | os.PathLike) -> Path:
    """``WORK/images``, checked.

    Raises:
        LabtfError: not a workspace.
    """
    images = Path(work) / "images"
    if not images.is_dir():
        raise LabtfError(f"{work} has no images/ folder; pass a 'labtf collect' output folder "
                         "(or put class folders under WORK/images/)")
    # curate moves files: a link that leads out of the workspace would move a file
    # that is not the workspace's, or put it somewhere else
    real = Path(work).resolve()
    links = [d for d in (images, *images.iterdir(), Path(work) / "rejected") if d.is_symlink()]
    outside = [d for d in links if not d.resolve().is_relative_to(real)]
    if outside:
        raise LabtfError(f"{outside[0]} is a link to {outside[0].resolve()}, outside {work}; "
                         "curate moves files only inside the workspace: copy the images in "
                         "or remove the link")
    return images


def list_images(images: Path) -> list[tuple[str, str]]:
    """(path relative to the workspace, label) for every image file, sorted."""
    out = []
    for d in sorted(p for p in images.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(d.rglob("*")):
            if f.is_file() and not f.name.startswith(".") and is_image_name(f):
                out.append((f.relative_to(images.parent).as_posix(), d.name))
    return out


def quality_problem(path: Path, min_side: int, max_aspect: float) -> str | None:
    """Why an image is unusable (``corrupt``, ``too_small``, ``extreme_aspect``,
    ``too_large``: more than ``labtf.images.MAX_PIXELS``) or None."""
    try:
        with Image.open(path) as img:
            try:
                check_pixels(img, path)
            except BadImage:
                return "too_large"
            img.seek(0)
            img.load()
            w, h = img.size
    except Exception:  # Pillow raises many types for bad files
        return "corrupt"
    if min(w, h) < min_side:
        return "too_small"
    if max(w, h) / max(1, min(w, h)) > max_aspect:
        return "extreme_aspect"
    return None


def move_problem(work: Path, rel: str) -> str | None:
    """Why ``WORK/rel`` cannot be moved to ``WORK/rejected/`` (None when it can).

    The path must name a file under ``images/`` whose folder, and the folder it would
    move to, resolve (links followed) inside the workspace.
    """
    parts = Path(rel).parts
    if Path(rel).is_absolute() or ".." in parts or len(parts) < 3 or parts[0] != "images":
        return f"not a path under images/<class>/ of {work}"
    real = work.resolve()
    src, dst = work / rel, work / "rejected" / Path(*parts[1:])
    for what, folder in (("its folder", src.parent), ("its rejected/ folder", dst.parent)):
        if not folder.resolve().is_relative_to(real):
            return f"{what} {folder} leads to {folder.resolve()}, outside {work}"
    if not src.is_file():
        return f"not a file in {work}"
    return None


def move_to_rejected(work: Path, rel: str, reason: str, ledger: Ledger,
                     by_path: dict[str, dict]) -> str:
    """Move ``WORK/rel`` to ``WORK/rejected/...`` (never overwriting) and record it.

    Returns:
        The new path relative to the workspace.
    """
    problem = move_problem(work, rel)
    if problem:
        raise LabtfError(f"'{rel}': {problem}")
    src = work / rel
    parts = Path(rel).parts
    dst = work / "rejected" / Path(*parts[1:])
    dst.parent.mkdir(parents=True, exist_ok=True)
    k = 0
    while dst.exists():
        k += 1
        dst = dst.with_name(f"{Path(parts[-1]).stem}_{k}{Path(parts[-1]).suffix}")
    os.replace(src, dst)
    new = dst.relative_to(work).as_posix()
    local = {"url": f"file:{rel}", "provider": "local", "label": parts[1] if len(parts) > 1 else ""}
    rec = dict(by_path.get(rel) or local)
    if "sha256" not in rec:
        rec["sha256"] = sha256_file(dst)
    rec.pop("time", None)
    rec.update(status="rejected", path=new, rejected_from=rel, reason=reason)
    ledger.append(rec)
    return new


def _by_path(ledger: Ledger) -> dict[str, dict]:
    return {r["path"]: r for r in ledger.latest().values() if r.get("status") == "ok" and r.get("path")}


def curate(work: str | os.PathLike, *, min_side: int = 64, max_aspect: float = 4.0,
           drop_duplicates: bool = False, review: bool = True,
           thresholds: phash.NearDuplicateThresholds | None = None,
           embed: bool | None = None) -> dict:
    """Filter, group near-duplicates, flag likely outliers and write the review pages.

    Args:
        work: collect workspace.
        min_side: smallest accepted image side (px).
        max_aspect: largest accepted long/short side ratio.
        drop_duplicates: also move all but the largest image of each single-class
            near-duplicate group to ``rejected/`` (cross-class groups are left for review).
        review: write ``curation/review/*.html``.
        thresholds: for :func:`labtf.curate.phash.near_duplicate_pairs` [its defaults].
        embed: use the EfficientNet-Lite0 embedding stage (:mod:`labtf.curate.embed`);
            None: on when keras is importable.

    Returns:
        Counts of the filter and near-duplicate steps.

    Raises:
        LabtfError: not a workspace, or no images.
    """
    work = Path(work)
    images = workspace_images(work)
    ledger = Ledger(work / LEDGER_NAME)
    by_path = _by_path(ledger)
    items = list_images(images)
    if not items:
        raise LabtfError(f"{images} holds no images; run 'labtf collect' first")
    before = len(items)
    reasons: Counter = Counter()
    kept = []
    for rel, label in items:
        why = quality_problem(work / rel, min_side, max_aspect)
        if why:
            reasons[why] += 1
            move_to_rejected(work, rel, why, ledger, by_path)
            log.info("rejected %s: %s", rel, why)
        else:
            kept.append((rel, label))
    per_class = Counter(label for _, label in kept)
    record_step(work, "filter", {"before": before, "after": len(kept), **{k: reasons.get(k, 0) for k in
                ("corrupt", "too_small", "extreme_aspect", "too_large")}, "min_side": min_side,
                "max_aspect": max_aspect, "per_class": dict(sorted(per_class.items()))})
    log.info("filter: %d -> %d image(s) (%s)", before, len(kept), dict(reasons) or "none rejected")

    sigs = [phash.image_signature(work / rel) for rel, _ in kept]
    from labtf.curate import embed as embed_mod

    if embed is None:
        embed = embed_mod.available()
    if embed and sigs:
        embed_mod.attach(sigs, embed_mod.embed_files([work / rel for rel, _ in kept]))
    th = thresholds or phash.NearDuplicateThresholds()
    pairs = phash.near_duplicate_pairs(sigs, th)
    groups = phash.group_pairs(len(kept), pairs)
    flags = []
    if embed and sigs:
        from labtf.curate.outliers import class_outliers

        flags = class_outliers(np.stack([s.embedding for s in sigs]), [label for _, label in kept])
        for f in flags:
            f["path"] = kept[f.pop("index")][0]
    glist = []
    for g, members in enumerate(groups.members):
        labels = sorted({kept[i][1] for i in members})
        glist.append({"group": g, "labels": labels, "cross_class": len(labels) > 1,
                      "paths": [kept[i][0] for i in members]})
    dropped = []
    if drop_duplicates:
        for grp in glist:
            if grp["cross_class"]:
                continue
            sizes = []
            for rel in grp["paths"]:
                with Image.open(work / rel) as im:
                    sizes.append((im.size[0] * im.size[1], rel))
            keep = max(sizes)[1]
            for _, rel in sorted(sizes):
                if rel != keep:
                    new = move_to_rejected(work, rel, "near_duplicate", ledger, by_path)
                    dropped.append((rel, new))
            grp["paths"] = [keep]
        glist = [g for g in glist if len(g["paths"]) > 1]
        gone = {rel for rel, _ in dropped}
        kept = [k for k in kept if k[0] not in gone]
        flags = [f for f in flags if f["path"] not in gone]
    paths = [rel for rel, _ in kept] if not dropped else None
    used = dataclasses.asdict(th)
    changed = {k: v for k, v in used.items()
               if v != getattr(phash.NearDuplicateThresholds, k)}   # the class defaults
    written = {k: v for k, v in used.items() if k not in phash.EMBEDDING_THRESHOLDS}
    written["embedding"] = bool(embed)
    doc = {"thresholds": {**written, **({k: used[k] for k in phash.EMBEDDING_THRESHOLDS}
                                        if embed else {}), **changed},
           "groups": glist}
    if paths is not None:
        doc["pairs"] = [{"a": paths[i], "b": paths[j], "phash": dp, "dhash": dd, "ncc": v}
                        for i, j, dp, dd, v in pairs]
    (work / "curation").mkdir(exist_ok=True)
    write_text(work / "curation" / GROUPS_NAME, json.dumps(doc, indent=1) + "\n")
    n_in = sum(len(g["paths"]) for g in glist)
    cross = sum(g["cross_class"] for g in glist)
    counts = {"before": len(kept) + len(dropped), "after": len(kept), "groups": len(glist),
              "images_in_groups": n_in, "cross_class_groups": cross, "dropped": len(dropped),
              "per_class": dict(sorted(Counter(label for _, label in kept).items()))}
    record_step(work, "near_duplicates", counts)
    log.info("near-duplicates: %d group(s) over %d image(s), %d across classes, %d moved",
             len(glist), n_in, cross, len(dropped))
    if embed:
        write_text(work / "curation" / OUTLIERS_NAME, json.dumps({"flags": flags}, indent=1) + "\n")
        n_closer = sum(f["reason"] == "closer to another class" for f in flags)
        record_step(work, "outliers", {"before": len(kept), "after": len(kept), "flagged": len(flags),
                                       "closer_to_another_class": n_closer,
                                       "far_from_its_class": len(flags) - n_closer})
        log.info("outliers: %d image(s) flagged for review (%d closer to another class)",
                 len(flags), n_closer)
    if review:
        from labtf.curate.review import write_review_pages

        index = write_review_pages(work, kept, glist, flags)
        log.debug("review pages: %s", index)
    return counts


def read_list(path: str | os.PathLike) -> list[str]:
    """Paths from an exported review list: JSON (``{"rejected": [...]}`` or a list) or text lines.

    Raises:
        LabtfError: missing or unreadable file.
    """
    path = Path(path)
    is_json, data = read_json_or_text(path, "rejection list", "export it from a review page")
    if is_json:
        items = data.get("rejected") if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise LabtfError(f"rejection list {path}: expected {{\"rejected\": [paths]}}")
        return [str(x) for x in items]
    return [ln.strip() for ln in data.splitlines() if ln.strip() and not ln.startswith("#")]


def apply_rejections(work: str | os.PathLike, lists: list[str]) -> dict:
    """Move every listed file (paths relative to the workspace) to ``rejected/``.

    Already-moved files are skipped (so applying a list twice is harmless).

    Returns:
        Counts of the review step.

    Every path is checked first (under ``images/<class>/``, no ``..``, no link out of
    the workspace, an existing file); one bad path moves nothing. ``report.json``'s
    review step lists every move (``moves``: from, to).

    Raises:
        LabtfError: a listed path is outside ``images/``, unknown, or leads out of WORK.
    """
    work = Path(work)
    images = workspace_images(work)
    ledger = Ledger(work / LEDGER_NAME)
    by_path = _by_path(ledger)
    already = {r.get("rejected_from") for r in ledger.latest().values() if r.get("status") == "rejected"}
    wanted = [p for lst in lists for p in read_list(lst)]
    before = len(list_images(images))
    todo, problems, skipped = [], [], 0
    for raw in dict.fromkeys(wanted):       # validate the whole list before moving anything
        rel = Path(raw).as_posix()
        problem = move_problem(work, rel)
        if problem and problem.startswith("not a file") and rel in already:
            skipped += 1
        elif problem:
            problems.append(f"'{raw}': {problem}")
        else:
            todo.append(rel)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise LabtfError(f"{len(problems)} path(s) of the rejection list cannot be moved, so "
                         f"nothing was moved: {'; '.join(problems[:3])}{more}; was the list "
                         "exported from this workspace?")
    moves = [{"from": rel, "to": move_to_rejected(work, rel, "review", ledger, by_path)}
             for rel in todo]
    moved = len(moves)
    after = list_images(images)
    counts = {"before": before, "after": len(after), "rejected": moved, "already_rejected": skipped,
              "per_class": dict(sorted(Counter(label for _, label in after).items())),
              "moves": moves}
    old = load_report(work)["steps"].get("review")
    if old:  # several review rounds: keep the first 'before' and add up the rejections
        counts["before"] = old["before"]
        counts["rejected"] += old.get("rejected", 0)
        counts["moves"] = old.get("moves", []) + moves
    record_step(work, "review", counts)
    log.debug("review: moved %d file(s) to rejected/ (%d already there); %d image(s) left",
              moved, skipped, len(after))
    return counts
