"""Provider plumbing: :class:`Candidate`, the :class:`Provider` base class and the registry.

The built-in providers live in :mod:`labtf.collect.providers`.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, fields
from typing import Callable, Iterator

from labtf.collect.http import FetchError, HttpClient
from labtf.collect.licences import normalise_licence
from labtf.errors import LabtfError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """One image URL a provider found, with the source and licence facts it gave.

    ``license``/``license_version`` are the provider's own words; ``license_id`` the
    canonical id (:func:`labtf.collect.licences.normalise_licence`). ``attribution``
    (Openverse's ready-made credit line), ``credit`` (Commons' ``Credit``) and
    ``attribution_required`` (Commons' ``AttributionRequired``; None: not stated) are kept
    as given.
    """

    url: str
    provider: str
    query: str = ""
    license: str = ""
    license_version: str = ""
    creator: str = ""
    landing_url: str = ""
    title: str = ""
    license_id: str = ""
    license_url: str = ""
    attribution: str = ""
    attribution_required: bool | None = None
    credit: str = ""
    creator_url: str = ""
    source: str = ""

    @property
    def licence(self) -> str:
        """The canonical licence id (computed for records cached before it was stored)."""
        return self.license_id or normalise_licence(self.license, self.license_version,
                                                    self.license_url)

    @classmethod
    def from_record(cls, rec: dict) -> "Candidate":
        """From a cached row or ledger record (unknown keys ignored)."""
        return cls(**{k: rec[k] for k in CANDIDATE_FIELDS if k in rec})


CANDIDATE_FIELDS = tuple(f.name for f in fields(Candidate))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Provider:
    """Base class. Subclasses implement :meth:`search` (or :meth:`search_class`).

    Args:
        client: the shared HTTP client.
        base_url: API root [the provider's public default].
        options: provider-specific settings (e.g. ``path`` for ``urls``).

    Class attributes: ``cacheable`` (results may be reused from ``candidates.jsonl``),
    ``download_concurrency`` (most parallel downloads from one host of its images).
    """

    name = "base"
    default_base_url = ""
    cacheable = True
    download_concurrency: int | None = None

    def __init__(self, client: HttpClient, base_url: str | None = None, **options):
        self.client = client
        self.base_url = (base_url or self.default_base_url).rstrip("/")
        self.options = options
        self.failed_queries: list[str] = []   # "query: reason" of searches that failed
        self.stopped = ""                     # why no more queries are sent (throttled)

    def search(self, query: str, limit: int) -> Iterator[Candidate]:
        """Yield up to ``limit`` candidates for one query."""
        raise NotImplementedError

    def queries_for(self, label: str, queries: list[str]) -> list[str]:
        """The searches to run for a class (the keywords file's queries)."""
        return list(queries)

    def search_class(self, label: str, query: str, limit: int) -> Iterator[Candidate]:
        """Yield up to ``limit`` candidates of one query for class ``label``."""
        return self.search(query, limit)

    def search_queries(self, label: str, queries: list[str], limit: int,
                       reuse: dict[str, tuple[dict, list[Candidate]]] | None = None) -> list[dict]:
        """Run a class's queries until ``limit`` distinct candidates, one status per query.

        Args:
            label: the class.
            queries: its queries.
            limit: distinct candidates wanted.
            reuse: query -> (earlier status, candidates) of searches that succeeded before.

        Returns:
            Dicts ``provider, label, query, status`` (``ok``, ``empty``, ``failed`` or
            ``skipped``), ``reason, count`` (results the API gave), ``time, seconds`` and
            ``candidates`` (new distinct ones). A failing query is logged; the others still
            run. A 429 that outlasts the request stops this provider's later queries.
        """
        seen: set[str] = set()
        out = []
        for q in self.queries_for(label, queries):
            rec = {"provider": self.name, "label": label, "query": q, "status": "skipped",
                   "reason": "", "count": 0, "time": _now(), "seconds": 0.0}
            if q in (reuse or {}):
                old, cands = reuse[q]
                rec = {**old, "reused": True}
            elif len(seen) >= limit:
                rec["reason"] = f"{limit} candidate(s) already found"
                cands = []
            elif self.stopped:
                rec.update(status="failed", reason=f"not sent: {self.stopped}")
                cands = []
            else:
                t0, cands = time.monotonic(), []
                try:
                    for c in self.search_class(label, q, limit - len(seen)):
                        rec["count"] += 1
                        cands.append(c)
                    rec["status"] = "ok" if rec["count"] else "empty"
                except FetchError as exc:
                    log.warning("%s: query '%s' failed: %s", self.name, q, exc)
                    self.failed_queries.append(f"{q}: {exc}")
                    rec.update(status="failed", reason=str(exc))
                    if exc.status == 429:
                        self.stopped = f"{self.name} throttled the search (HTTP 429)"
                        log.warning("%s: throttled; its remaining queries are not sent this run",
                                    self.name)
                rec["seconds"] = round(time.monotonic() - t0, 3)
            new = [c for c in cands if c.url not in seen]
            new = new[:max(0, limit - len(seen))]
            seen.update(c.url for c in new)
            out.append({**rec, "candidates": new})
        return out

    def candidates(self, label: str, queries: list[str], limit: int) -> Iterator[Candidate]:
        """Yield up to ``limit`` distinct candidates for a class over its queries.

        A failing query is logged and skipped; the others still run.
        """
        for rec in self.search_queries(label, queries, limit):
            yield from rec["candidates"]


PROVIDERS: dict[str, type[Provider]] = {}


def register_provider(name: str) -> Callable[[type[Provider]], type[Provider]]:
    """Class decorator adding a provider to :data:`PROVIDERS` under ``name``."""

    def deco(cls: type[Provider]) -> type[Provider]:
        cls.name = name
        PROVIDERS[name] = cls
        return cls

    return deco


def make_provider(name: str, client: HttpClient, base_url: str | None = None, **options) -> Provider:
    """Instantiate a registered provider.

    Raises:
        LabtfError: unknown provider name (the message lists the known ones).
    """
    if name not in PROVIDERS:
        raise LabtfError(f"unknown provider '{name}'; choose one of: {', '.join(sorted(PROVIDERS))}")
    return PROVIDERS[name](client, base_url, **options)
