"""Image search providers as plugins: a registry name -> class.

A provider turns (class label, search queries) into :class:`Candidate` image
URLs with whatever licence facts the source gives. Built in: ``openverse``
(Openverse REST API), ``wikimedia`` (Wikimedia Commons MediaWiki API) and
``urls`` (a plain list of URLs per class). Base URLs are configurable so tests
and mirrors can point them at a local server. A browser-driven scraper of
general web search engines is out of scope.

Add a provider::

    @register_provider("mysource")
    class MySource(Provider):
        def search(self, query, limit): ...
"""
from __future__ import annotations

import csv
import html
import logging
import re
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from labtf.collect.http import FetchError, HttpClient
from labtf.errors import LabtfError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """One image URL a provider found, with its source facts."""

    url: str
    provider: str
    query: str = ""
    license: str = ""
    license_version: str = ""
    creator: str = ""
    landing_url: str = ""
    title: str = ""


class Provider:
    """Base class. Subclasses implement :meth:`search` (or :meth:`candidates`).

    Args:
        client: the shared HTTP client.
        base_url: API root [the provider's public default].
        options: provider-specific settings (e.g. ``path`` for ``urls``).
    """

    name = "base"
    default_base_url = ""

    def __init__(self, client: HttpClient, base_url: str | None = None, **options):
        self.client = client
        self.base_url = (base_url or self.default_base_url).rstrip("/")
        self.options = options
        self.failed_queries: list[str] = []   # "query: reason" of searches that failed

    def search(self, query: str, limit: int) -> Iterator[Candidate]:
        """Yield up to ``limit`` candidates for one query."""
        raise NotImplementedError

    def candidates(self, label: str, queries: list[str], limit: int) -> Iterator[Candidate]:
        """Yield up to ``limit`` distinct candidates for a class over its queries.

        A failing query is logged and skipped; the others still run.
        """
        seen: set[str] = set()
        for q in queries:
            if len(seen) >= limit:
                return
            try:
                for c in self.search(q, limit - len(seen)):
                    if c.url not in seen:
                        seen.add(c.url)
                        yield c
                        if len(seen) >= limit:
                            return
            except FetchError as exc:
                log.warning("%s: query '%s' failed: %s", self.name, q, exc)
                self.failed_queries.append(f"{q}: {exc}")


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


def _strip_tags(text: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", text or "")).strip()


@register_provider("openverse")
class Openverse(Provider):
    """Openverse (openverse.org) image search: CC-licensed and public-domain works.

    ``GET {base}/v1/images/?q=...&page=N&page_size=M`` -> ``results[]`` with
    ``url, license, license_version, creator, foreign_landing_url, title``.
    """

    default_base_url = "https://api.openverse.org"

    def search(self, query: str, limit: int) -> Iterator[Candidate]:
        # anonymous clients may ask for at most 20 per page (the API answers 401 above)
        page_size = min(20, int(self.options.get("page_size", 20)))
        n, page, max_pages = 0, 1, int(self.options.get("max_pages", 20))
        while n < limit and page <= max_pages:
            qs = urllib.parse.urlencode({"q": query, "page": page, "page_size": page_size})
            data = self.client.get_json(f"{self.base_url}/v1/images/?{qs}")
            results = data.get("results") or []
            for r in results:
                url = r.get("url")
                if not url:
                    continue
                yield Candidate(url, self.name, query, str(r.get("license") or ""),
                                str(r.get("license_version") or ""), str(r.get("creator") or ""),
                                str(r.get("foreign_landing_url") or ""), str(r.get("title") or ""))
                n += 1
                if n >= limit:
                    return
            if not results or page >= int(data.get("page_count") or page):
                return
            page += 1


@register_provider("wikimedia")
class WikimediaCommons(Provider):
    """Wikimedia Commons files via the MediaWiki API (``generator=search`` in namespace 6).

    Licence and creator come from ``extmetadata`` (``LicenseShortName``, ``Artist``);
    only ``image/*`` MIME types are kept.
    """

    default_base_url = "https://commons.wikimedia.org/w/api.php"

    def search(self, query: str, limit: int) -> Iterator[Candidate]:
        params = {"action": "query", "format": "json", "generator": "search", "gsrsearch": query,
                  "gsrnamespace": "6", "gsrlimit": str(min(50, max(1, limit))),
                  "prop": "imageinfo", "iiprop": "url|extmetadata|mime",
                  "iiurlwidth": str(int(self.options.get("thumb_width", 1024))),   # bitmap thumbs
                  "maxlag": "5"}
        n, calls = 0, 0
        cont: dict = {}
        while n < limit and calls < int(self.options.get("max_pages", 20)):
            calls += 1
            qs = urllib.parse.urlencode({**params, **cont})
            data = self._call(f"{self.base_url}?{qs}")
            pages = (data.get("query") or {}).get("pages") or {}
            items = pages.values() if isinstance(pages, dict) else pages
            for page in sorted(items, key=lambda p: p.get("index", 0)):
                info = (page.get("imageinfo") or [{}])[0]
                url, mime = info.get("thumburl") or info.get("url"), str(info.get("mime") or "")
                if not url or (mime and not mime.startswith("image/")):
                    continue
                meta = info.get("extmetadata") or {}
                lic = _strip_tags((meta.get("LicenseShortName") or {}).get("value", ""))
                yield Candidate(url, self.name, query, lic, "",
                                _strip_tags((meta.get("Artist") or {}).get("value", "")),
                                str(info.get("descriptionurl") or ""), str(page.get("title") or ""))
                n += 1
                if n >= limit:
                    return
            cont = {k: v for k, v in (data.get("continue") or {}).items()}
            if not cont:
                return

    def _call(self, url: str) -> dict:
        """One API call; the Action API reports errors as HTTP 200 ``{"error": {code, info}}``:
        ``ratelimited`` and ``maxlag`` are retried after a wait, the rest raise.

        Raises:
            FetchError: transport failure or an API error.
        """
        waits = [float(w) for w in self.options.get("api_waits", (5.0, 10.0, 20.0))]
        for attempt in range(len(waits) + 1):
            data = self.client.get_json(url)
            err = data.get("error") if isinstance(data, dict) else None
            if not isinstance(err, dict):
                return data
            code, info = str(err.get("code") or "?"), " ".join(str(err.get("info") or "").split())
            if code not in ("ratelimited", "maxlag") or attempt == len(waits):
                raise FetchError(f"Wikimedia API error {code}: {info[:300]}", retryable=False)
            log.info("wikimedia: %s (%s); waiting %gs", code, info[:120], waits[attempt])
            time.sleep(waits[attempt])
        raise AssertionError("unreachable")


@register_provider("urls")
class UrlList(Provider):
    """A plain URL list: option ``path`` to a CSV with columns ``label,url`` (optional
    ``license,creator,landing_url``) or a text file of ``label<TAB>url`` lines.
    Queries are ignored; every URL listed for the class is a candidate.
    """

    def labels(self) -> list[str]:
        """The classes the list names, in first-seen order."""
        return list(dict.fromkeys(r["label"] for r in self._rows() if r.get("label")))

    def _rows(self) -> list[dict]:
        path = Path(self.options.get("path") or "")
        if not path.is_file():
            raise LabtfError(f"URL list '{path}' does not exist; pass --urls FILE (CSV label,url)")
        text = path.read_text(encoding="utf-8")
        if text.startswith("label,") or text.startswith("label;"):
            return list(csv.DictReader(text.splitlines()))
        rows = []
        for line in text.splitlines():
            if line.strip() and not line.startswith("#"):
                parts = re.split(r"[\t ,]+", line.strip(), maxsplit=1)
                if len(parts) == 2:
                    rows.append({"label": parts[0], "url": parts[1]})
        return rows

    def candidates(self, label: str, queries: list[str], limit: int) -> Iterator[Candidate]:
        n = 0
        for row in self._rows():
            if row.get("label") == label and row.get("url") and n < limit:
                n += 1
                yield Candidate(row["url"], self.name, "", row.get("license", ""), "",
                                row.get("creator", ""), row.get("landing_url", ""))
