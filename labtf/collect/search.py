"""The search step: every class x provider x query, with a status per query and a cache.

``out/search_status.json`` records each query (``provider, label, query, status, reason,
count, time, seconds``; status ``ok``, ``empty``, ``failed`` or ``skipped``) and
``out/candidates.jsonl`` the candidates of the searches that succeeded. On the next run a
query whose last search was ``ok`` is taken from the cache; a failed or empty one is
searched again, and so is everything with ``refresh``. A URL list is read afresh each run.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from labtf.collect.base import Candidate, Provider
from labtf.errors import LabtfError
from labtf.fileio import write_text

log = logging.getLogger(__name__)

CANDIDATES_NAME = "candidates.jsonl"
STATUS_NAME = "search_status.json"


def _read_cache(out: Path) -> tuple[dict, dict]:
    """(key -> earlier status, key -> cached candidates); key = (provider, label, query).

    A cache written before status files existed (complete by construction) counts as ok.
    """
    rows_path, status_path = out / CANDIDATES_NAME, out / STATUS_NAME
    cached: dict[tuple, list[Candidate]] = {}
    if rows_path.is_file():
        for line in rows_path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s: unreadable line skipped", rows_path)
                continue
            if isinstance(row, dict) and row.get("url") and row.get("provider"):
                key = (row["provider"], row.get("label", ""), row.get("query", ""))
                cached.setdefault(key, []).append(Candidate.from_record(row))
    statuses: dict[tuple, dict] = {}
    if status_path.is_file():
        try:
            doc = json.loads(status_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            log.warning("%s is unreadable; searching again", status_path)
            return {}, {}
        for rec in doc.get("queries", []) if isinstance(doc, dict) else []:
            if isinstance(rec, dict):
                statuses[(rec.get("provider"), rec.get("label"), rec.get("query"))] = rec
    if not rows_path.is_file():   # the cache is gone: search everything again
        return {}, {}
    if not status_path.is_file() and cached:   # legacy cache: only ever written after a complete search
        statuses = {k: {"provider": k[0], "label": k[1], "query": k[2], "status": "ok",
                        "reason": "", "count": len(v), "time": "", "seconds": 0.0}
                    for k, v in cached.items()}
    return statuses, cached


def _write_cache(out: Path, statuses: dict[tuple, dict], cached: dict[tuple, list[Candidate]]) -> None:
    rows = [json.dumps({"label": key[1], **c.__dict__}, sort_keys=True) + "\n"
            for key, cands in cached.items() if statuses.get(key, {}).get("status") == "ok"
            for c in cands]
    write_text(out / CANDIDATES_NAME, "".join(rows), fsync=True)
    doc = {"queries": [{k: v for k, v in rec.items() if k != "candidates"}
                       for rec in statuses.values()]}
    write_text(out / STATUS_NAME, json.dumps(doc, indent=1, ensure_ascii=False) + "\n", fsync=True)


def gather_candidates(keywords: dict[str, list[str]], providers: list[Provider], per_class: int,
                      out: Path, refresh: bool = False
                      ) -> tuple[list[tuple[str, Candidate]], dict[str, int]]:
    """Search every class with every provider, reusing earlier successful searches.

    A URL found for several classes is kept once, for the first class.

    Args:
        keywords: class -> queries.
        providers: provider instances.
        per_class: distinct candidates per class and provider.
        out: workspace (``candidates.jsonl``, ``search_status.json``).
        refresh: search everything again.

    Returns:
        (label, candidate) pairs in a stable order, and this run's query statuses counted
        (``ok``, ``empty``, ``failed``, ``skipped``, ``reused``).

    Raises:
        LabtfError: no candidates for any class.
    """
    statuses, cached = ({}, {}) if refresh else _read_cache(out)
    jobs, seen, current = [], set(), []
    for label, queries in keywords.items():
        for prov in providers:
            reuse = {}
            if prov.cacheable:
                for q in prov.queries_for(label, queries):
                    old = statuses.get((prov.name, label, q))
                    if old and old.get("status") == "ok":
                        reuse[q] = (old, cached.get((prov.name, label, q), []))
            n = 0
            for rec in prov.search_queries(label, queries, per_class, reuse):
                key = (prov.name, label, rec["query"])
                statuses[key] = {k: v for k, v in rec.items() if k != "candidates"}
                current.append(statuses[key])
                if not rec.get("reused") and rec["status"] != "skipped":
                    cached[key] = rec["candidates"] if prov.cacheable else []
                for c in rec["candidates"]:
                    n += 1
                    if c.url not in seen:
                        seen.add(c.url)
                        jobs.append((label, c))
            log.info("search: %s via %s: %d candidate(s)", label, prov.name, n)
    summary = {k: sum(r["status"] == k for r in current)
               for k in ("ok", "empty", "failed", "skipped")}
    summary["reused"] = sum(bool(r.get("reused")) for r in current)
    if summary["reused"]:
        log.info("reused %d successful search(es) from %s (--refresh-search to search again)",
                 summary["reused"], out / CANDIDATES_NAME)
    failed = [f"{r['provider']}: {r['query']}: {r['reason']}" for r in current
              if r["status"] == "failed"]
    empty = summary["empty"]
    if failed or empty:
        log.warning("search: %d failed and %d empty quer%s; they are searched again on the next "
                    "run (details: %s)", len(failed), empty,
                    "y" if len(failed) + empty == 1 else "ies", out / STATUS_NAME)
    out.mkdir(parents=True, exist_ok=True)
    _write_cache(out, statuses, cached)
    if not jobs:
        why = f"; failed: {failed[0]}" if failed else ""
        raise LabtfError(f"no candidates found for any class ({', '.join(keywords)}){why}; check "
                         "the queries, the provider (--provider) or the URL list")
    return jobs, summary
