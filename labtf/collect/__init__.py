"""Collect a labelled image dataset from image-search providers, reproducibly.

``collect(keywords, out)``: a keywords file (class -> search queries) ->
providers (:mod:`labtf.collect.providers`) -> candidate list
(``out/candidates.jsonl``, reused on resume) -> downloader
(:mod:`labtf.collect.download`) -> ``out/images/<class>/`` plus the ledger
``out/manifest.jsonl`` (source URL, provider, licence, sha256, status per image)
and the counts in ``out/report.json`` / ``report.md``.
"""
from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from labtf.collect.download import Downloader
from labtf.collect.http import HttpClient
from labtf.collect.ledger import LEDGER_NAME, Ledger
from labtf.collect.providers import PROVIDERS, Candidate, make_provider, register_provider
from labtf.config import check_choice, options_from_dict
from labtf.errors import LabtfError
from labtf.fileio import read_json_or_text, write_text

log = logging.getLogger(__name__)

__all__ = ["collect", "CollectOptions", "load_keywords", "PROVIDERS", "register_provider",
           "Candidate", "DEFAULT_KEYWORDS", "LEDGER_NAME"]

#: The poster's 15 lab-apparatus classes with search queries.
DEFAULT_KEYWORDS = Path(__file__).resolve().parents[2] / "datasets" / "lab_apparatus_keywords.json"
CANDIDATES_NAME = "candidates.jsonl"


def load_keywords(path: str | os.PathLike) -> dict[str, list[str]]:
    """Read a keywords file: JSON ``{"classes": {label: [query, ...]}}`` (or a bare mapping),
    or text lines ``label: query; query``.

    Raises:
        LabtfError: missing file, bad syntax, bad class name or a class without queries.
    """
    path = Path(path)
    is_json, data = read_json_or_text(path, "keywords file",
                                      'pass a JSON file {"classes": {"label": ["query", ...]}}')
    if is_json:
        classes = data.get("classes", data) if isinstance(data, dict) else None
        if not isinstance(classes, dict):
            raise LabtfError(f"keywords file {path}: expected an object of label -> list of queries")
    else:
        classes = {}
        for i, line in enumerate(data.splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if ":" not in line:
                raise LabtfError(f"keywords file {path} line {i}: expected 'label: query; query'")
            label, queries = line.split(":", 1)
            classes[label.strip()] = [q.strip() for q in queries.split(";") if q.strip()]
    out = {}
    for label, queries in classes.items():
        if isinstance(queries, str):
            queries = [queries]
        check_label(label, f"keywords file {path}")
        if not queries or not all(isinstance(q, str) and q.strip() for q in queries):
            raise LabtfError(f"keywords file {path}: class '{label}' needs at least one query")
        out[label] = [q.strip() for q in queries]
    if not out:
        raise LabtfError(f"keywords file {path} lists no classes")
    return out


def check_label(label: str, where: str) -> None:
    """Refuse a class name that is not a plain folder name.

    Raises:
        LabtfError: empty, a path, hidden, ``rejected`` or with control characters.
    """
    if (not label or "/" in label or "\\" in label or label.startswith(".") or label == "rejected"
            or any(ord(ch) < 32 for ch in label)):
        raise LabtfError(f"{where}: {label!r} is not usable as a class folder name")


def _write_jsonl_atomic(path: Path, rows: list[dict]) -> None:
    write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows), fsync=True)


def gather_candidates(keywords: dict[str, list[str]], providers: list, per_class: int,
                      out: Path, refresh: bool = False) -> list[tuple[str, Candidate]]:
    """Search every class with every provider; cache the list in ``out/candidates.jsonl``.

    A URL found for several classes is kept once, for the first class.

    Returns:
        (label, candidate) pairs in a stable order.
    """
    cache = out / CANDIDATES_NAME
    if cache.is_file() and not refresh and cache.stat().st_size:
        rows = [json.loads(line) for line in cache.read_text(encoding="utf-8").splitlines() if line]
        log.info("reusing %d candidate(s) from %s (--refresh-search to search again)", len(rows), cache)
        return [(r.pop("label"), Candidate(**r)) for r in rows]
    jobs, seen = [], set()
    for label, queries in keywords.items():
        for prov in providers:
            n = 0
            for c in prov.candidates(label, queries, per_class):
                n += 1
                if c.url not in seen:
                    seen.add(c.url)
                    jobs.append((label, c))
            log.info("search: %s via %s: %d candidate(s)", label, prov.name, n)
    failed = [f"{p.name}: {q}" for p in providers for q in p.failed_queries]
    empty = sorted(set(keywords) - {lab for lab, _ in jobs})
    if failed or empty:   # an incomplete search is never cached: the next run searches again
        cache.unlink(missing_ok=True)
        log.warning("search incomplete (%d failed quer%s, %d class(es) without candidates); not "
                    "cached, the next run searches again", len(failed), "y" if len(failed) == 1
                    else "ies", len(empty))
    else:
        _write_jsonl_atomic(cache, [{"label": lab, **c.__dict__} for lab, c in jobs])
    if not jobs:
        why = f"; failed: {failed[0]}" if failed else ""
        raise LabtfError(f"no candidates found for any class ({', '.join(keywords)}){why}; check "
                         "the queries, the provider (--provider) or the URL list")
    return jobs


@dataclass
class CollectOptions:
    """How :func:`collect` searches and downloads (``labtf collect``'s options), validated.

    Attributes:
        providers: registry names (``openverse``, ``wikimedia``, ``urls``).
        per_class: candidates per class and provider.
        base_urls: provider name -> API base URL override (mirrors, tests).
        urls_file: URL list (CSV ``label,url``) for the ``urls`` provider.
        workers: concurrent downloads.
        timeout: seconds per socket operation (a whole download gets 3x this).
        retries: retries on 5xx, timeouts and dropped connections.
        backoff: first retry delay in seconds (doubles per retry).
        rate_per_host: requests per second per host (0: unlimited).
        max_bytes: largest image accepted.
        refresh_search: search again instead of reusing ``candidates.jsonl``.
        retry_failed: try failed URLs again.
        classes: only these classes of the keywords file (None: all).
    """

    providers: tuple[str, ...] = ("openverse",)
    per_class: int = 600
    base_urls: dict[str, str] = field(default_factory=dict)
    urls_file: str | None = None
    workers: int = 8
    timeout: float = 10.0
    retries: int = 3
    backoff: float = 0.5
    rate_per_host: float = 4.0
    max_bytes: int = 20 << 20
    refresh_search: bool = False
    retry_failed: bool = False
    classes: list[str] | None = None

    def __post_init__(self) -> None:
        self.providers = tuple(self.providers)
        if not self.providers:
            raise LabtfError(f"no provider given; choose from: {', '.join(sorted(PROVIDERS))}")
        for name in (*self.providers, *self.base_urls):
            check_choice("provider", name, sorted(PROVIDERS))
        for name, low in (("per_class", 1), ("workers", 1), ("retries", 0), ("max_bytes", 1)):
            if int(getattr(self, name)) < low:
                raise LabtfError(f"{name} must be at least {low}, got {getattr(self, name)}")
        if not self.timeout > 0:
            raise LabtfError(f"timeout must be above 0 seconds, got {self.timeout}")
        for name in ("backoff", "rate_per_host"):
            if not getattr(self, name) >= 0:
                raise LabtfError(f"{name} must be 0 or more, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, d: dict) -> "CollectOptions":
        """Build from a dict, refusing unknown keys with the list of valid ones."""
        return options_from_dict(cls, d, "collect option")


def collect(keywords_file: str | os.PathLike | None, out: str | os.PathLike, *,
            options: CollectOptions | None = None, **overrides) -> dict:
    """Search, download and record a dataset (resumable: run it again to continue).

    Args:
        keywords_file: class -> queries (see :func:`load_keywords`) [with only the ``urls``
            provider: the URL list's classes; else the poster's 15 classes].
        out: workspace folder (``images/``, ``manifest.jsonl``, ``candidates.jsonl``, report).
        options: how to search and download (defaults: :class:`CollectOptions`'s).
        **overrides: :class:`CollectOptions` fields, over ``options``.

    Returns:
        The collect step's counts (also written to the report).

    Raises:
        LabtfError: unknown option (the message lists the valid ones) or bad value; bad
            keywords file, unknown provider or class; no candidates at all; a class ended
            without candidates (after downloading the others).
    """
    opts = CollectOptions.from_dict({**(asdict(options) if options else {}), **overrides})
    providers, urls_file, classes = opts.providers, opts.urls_file, opts.classes
    from labtf.curate.report import record_step

    out = Path(out)
    client = HttpClient(timeout=opts.timeout, retries=opts.retries, backoff=opts.backoff,
                        rate_per_host=opts.rate_per_host, max_bytes=opts.max_bytes)
    provs = [make_provider(p, client, opts.base_urls.get(p), path=urls_file) for p in providers]
    if keywords_file is None and tuple(providers) == ("urls",):
        keywords_file = urls_file
        keywords = {lab: [lab] for lab in provs[0].labels()}
        for lab in keywords:
            check_label(lab, f"URL list {urls_file}")
        if not keywords:
            raise LabtfError(f"URL list {urls_file} names no classes; expected lines 'label,url'")
    else:
        keywords_file = keywords_file or DEFAULT_KEYWORDS
        keywords = load_keywords(keywords_file)
    if classes:
        unknown = [c for c in classes if c not in keywords]
        if unknown:
            raise LabtfError(f"class '{unknown[0]}' is not in {keywords_file}; "
                             f"known: {', '.join(keywords)}")
        keywords = {c: keywords[c] for c in classes}
    out.mkdir(parents=True, exist_ok=True)
    jobs = gather_candidates(keywords, provs, opts.per_class, out, opts.refresh_search)
    ledger = Ledger(out / LEDGER_NAME)
    dl = Downloader(out / "images", ledger, client, workers=opts.workers,
                    retry_failed=opts.retry_failed)
    dl.run(jobs)
    state = ledger.latest()
    status = Counter(r.get("status") for r in state.values())
    per_class_ok = Counter(r.get("label") for r in state.values() if r.get("status") == "ok")
    failures = Counter((r.get("error") or "").split(" (after")[0].split(":")[0]
                       for r in state.values() if r.get("status") == "failed")
    counts = {"before": len(jobs), "after": status["ok"] + status["rejected"],
              "candidates": len(jobs), "ok": status["ok"], "duplicate": status["duplicate"],
              "failed": status["failed"], "pending": len(jobs) - sum(status.values()),
              "failure_reasons": dict(failures.most_common(10)),
              "per_class": {c: per_class_ok.get(c, 0) for c in keywords},
              "providers": list(providers)}
    record_step(out, "collect", counts)
    log.info("collect: %d candidate(s) -> %d image(s) kept, %d duplicate, %d failed",
             len(jobs), status["ok"], status["duplicate"], status["failed"])
    found = {lab for lab, _ in jobs}
    missing = [c for c in keywords if c not in found]
    if missing:
        raise LabtfError(f"class(es) without candidates: {', '.join(missing)} (the others were "
                         "downloaded); fix their queries or URLs and run again")
    return counts
