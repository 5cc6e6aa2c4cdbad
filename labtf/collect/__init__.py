"""Collect a labelled image dataset from image-search providers, reproducibly.

``collect(keywords, out)``: a keywords file (class -> search queries) ->
providers (:mod:`labtf.collect.providers`) -> candidate list
(``out/candidates.jsonl`` and a status per query in ``out/search_status.json``; successful
searches are reused on resume, failed and empty ones searched again,
:mod:`labtf.collect.search`) -> optional licence filter (:mod:`labtf.collect.licences`) ->
downloader (:mod:`labtf.collect.download`) -> ``out/images/<class>/`` plus the ledger
``out/manifest.jsonl`` (source URL, provider, licence and attribution, sha256, status per
image) and the counts in ``out/report.json`` / ``report.md``.
"""
from __future__ import annotations

import logging
import os
import urllib.parse
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from labtf.collect.download import Downloader
from labtf.collect.http import HttpClient, has_contact, user_agent
from labtf.collect.ledger import LEDGER_NAME, Ledger
from labtf.collect.licences import LicenceFilter
from labtf.collect.providers import PROVIDERS, Candidate, make_provider, register_provider
from labtf.collect.search import CANDIDATES_NAME, STATUS_NAME, gather_candidates
from labtf.config import check_choice, options_from_dict
from labtf.errors import LabtfError
from labtf.fileio import read_json_or_text

log = logging.getLogger(__name__)

__all__ = ["collect", "CollectOptions", "load_keywords", "PROVIDERS", "register_provider",
           "Candidate", "DEFAULT_KEYWORDS", "LEDGER_NAME", "CANDIDATES_NAME", "STATUS_NAME",
           "LicenceFilter"]

#: The poster's 15 lab-apparatus classes with search queries.
DEFAULT_KEYWORDS = Path(__file__).resolve().parents[2] / "datasets" / "lab_apparatus_keywords.json"
#: Option -> environment variable read when the option is not given.
ENV_VARS = {"contact": "LABTF_CONTACT", "user_agent": "LABTF_USER_AGENT",
            "openverse_client_id": "OPENVERSE_CLIENT_ID",
            "openverse_client_secret": "OPENVERSE_CLIENT_SECRET"}


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
        contact: e-mail and/or project URL put in the User-Agent [env ``LABTF_CONTACT``];
            required by ``wikimedia`` (its User-Agent policy).
        user_agent: the whole User-Agent instead [env ``LABTF_USER_AGENT``].
        openverse_client_id, openverse_client_secret: Openverse OAuth2 client credentials
            [env ``OPENVERSE_CLIENT_ID``/``OPENVERSE_CLIENT_SECRET``]; pages of up to 500.
            Never written to a file or log.
        licence_allows: keep only licences granting all of these (``commercial``,
            ``modification``, ``no-attribution``, ``no-share-alike``; comma lists allowed).
        licences: keep only these licences (any spelling; no version: all versions).
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
    contact: str | None = None
    user_agent: str | None = None
    openverse_client_id: str | None = field(default=None, repr=False)
    openverse_client_secret: str | None = field(default=None, repr=False)
    licence_allows: tuple[str, ...] = ()
    licences: tuple[str, ...] = ()
    classes: list[str] | None = None

    def __post_init__(self) -> None:
        explicit_contact = bool(self.contact or self.user_agent)
        for name, var in ENV_VARS.items():   # an explicit --contact beats LABTF_USER_AGENT
            if not getattr(self, name) and not (name == "user_agent" and explicit_contact):
                setattr(self, name, os.environ.get(var) or None)
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
        self.licence_allows, self.licences = tuple(self.licence_allows), tuple(self.licences)
        self.licence_filter()   # refuses unknown names now
        user_agent(self.contact, self.user_agent)   # refuses control characters now
        if self.contact and not has_contact(self.contact):
            raise LabtfError(f"--contact '{self.contact}' holds no e-mail address or http(s) URL")
        if "wikimedia" in self.providers and not has_contact(self.user_agent or self.contact):
            raise LabtfError("wikimedia needs contact details in the User-Agent (its policy): "
                             "pass --contact 'you@example.org https://your.project' (or set "
                             "LABTF_CONTACT)")
        if bool(self.openverse_client_id) != bool(self.openverse_client_secret):
            raise LabtfError("Openverse credentials need both --openverse-client-id and "
                             "--openverse-client-secret (or OPENVERSE_CLIENT_ID and "
                             "OPENVERSE_CLIENT_SECRET)")

    def licence_filter(self) -> LicenceFilter:
        """The licence filter these options describe (empty: keep everything).

        Raises:
            LabtfError: an unknown permission or licence name.
        """
        return LicenceFilter.parse(self.licence_allows, self.licences)

    def provider_options(self, name: str) -> dict:
        """Options for provider ``name`` (URL list path, Openverse credentials)."""
        if name == "urls":
            return {"path": self.urls_file}
        if name == "openverse" and self.openverse_client_id:
            return {"client_id": self.openverse_client_id,
                    "client_secret": self.openverse_client_secret}
        return {}

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
        out: workspace folder (``images/``, ``manifest.jsonl``, ``candidates.jsonl``,
            ``search_status.json``, report).
        options: how to search and download (defaults: :class:`CollectOptions`'s).
        **overrides: :class:`CollectOptions` fields, over ``options``.

    Returns:
        The collect step's counts (also written to the report).

    Raises:
        LabtfError: unknown option (the message lists the valid ones) or bad value;
            ``wikimedia`` without contact details; bad keywords file, unknown provider or
            class; refused Openverse credentials; no candidates at all; a class ended
            without candidates (after downloading the others).
    """
    opts = CollectOptions.from_dict({**(asdict(options) if options else {}), **overrides})
    providers, urls_file, classes = opts.providers, opts.urls_file, opts.classes
    from labtf.curate.report import record_step

    out = Path(out)
    client = HttpClient(timeout=opts.timeout, retries=opts.retries, backoff=opts.backoff,
                        rate_per_host=opts.rate_per_host, max_bytes=opts.max_bytes,
                        user_agent=user_agent(opts.contact, opts.user_agent))
    provs = [make_provider(p, client, opts.base_urls.get(p), **opts.provider_options(p))
             for p in providers]
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
    found, searches = gather_candidates(keywords, provs, opts.per_class, out, opts.refresh_search)
    jobs, filtered = apply_licence_filter(found, opts.licence_filter())
    for _, c in jobs:   # e.g. Wikimedia: at most 2 downloads at a time from its image hosts
        limit = getattr(PROVIDERS.get(c.provider), "download_concurrency", None)
        if limit:
            client.limit_host(urllib.parse.urlsplit(c.url).netloc, limit)
    ledger = Ledger(out / LEDGER_NAME)
    dl = Downloader(out / "images", ledger, client, workers=opts.workers,
                    retry_failed=opts.retry_failed)
    dl.run(jobs)
    state = ledger.latest()
    status = Counter(r.get("status") for r in state.values())
    per_class_ok = Counter(r.get("label") for r in state.values() if r.get("status") == "ok")
    failures = Counter((r.get("error") or "").split(" (after")[0].split(":")[0]
                       for r in state.values() if r.get("status") == "failed")
    counts = {"before": len(found), "after": status["ok"] + status["rejected"],
              "candidates": len(found), "ok": status["ok"], "duplicate": status["duplicate"],
              "failed": status["failed"], "pending": sum(c.url not in state for _, c in jobs),
              "failure_reasons": dict(failures.most_common(10)),
              "per_class": {c: per_class_ok.get(c, 0) for c in keywords},
              "providers": list(providers), "searches_failed": searches["failed"],
              "searches_empty": searches["empty"]}
    if opts.licence_filter():
        counts["licence_filtered"] = filtered
    record_step(out, "collect", counts)
    log.info("collect: %d candidate(s) -> %d image(s) kept, %d duplicate, %d failed",
             len(found), status["ok"], status["duplicate"], status["failed"])
    have = {lab for lab, _ in jobs}
    missing = [c for c in keywords if c not in have]
    if missing:
        by_licence = [c for c in missing if any(lab == c for lab, _ in found)]
        why = (f" ({', '.join(by_licence)}: every candidate refused by the licence filter)"
               if by_licence else "")
        raise LabtfError(f"class(es) without candidates: {', '.join(missing)}{why} (the others "
                         "were downloaded); fix their queries, URLs or licence filter and run "
                         f"again (search details: {out / STATUS_NAME})")
    return counts


def apply_licence_filter(jobs: list[tuple[str, Candidate]], lf: LicenceFilter
                         ) -> tuple[list[tuple[str, Candidate]], int]:
    """Keep the candidates whose licence passes ``lf`` (before any download).

    Returns:
        (kept jobs, how many were filtered out).
    """
    if not lf:
        return jobs, 0
    kept = [(lab, c) for lab, c in jobs if lf.accepts(c.licence)]
    dropped = Counter(c.licence or "unknown" for lab, c in jobs if not lf.accepts(c.licence))
    log.info("licence filter: %d of %d candidate(s) filtered out%s", len(jobs) - len(kept),
             len(jobs), (" (" + ", ".join(f"{k} {v}" for k, v in dropped.most_common(6)) + ")")
             if dropped else "")
    return kept, len(jobs) - len(kept)
