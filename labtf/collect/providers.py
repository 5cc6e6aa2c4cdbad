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
from pathlib import Path
from typing import Iterator

from labtf.collect.base import (CANDIDATE_FIELDS, PROVIDERS, Candidate, Provider, make_provider,
                                register_provider)
from labtf.collect.http import FetchError, HttpClient
from labtf.collect.licences import normalise_licence
from labtf.errors import LabtfError

log = logging.getLogger(__name__)

__all__ = ["CANDIDATE_FIELDS", "PROVIDERS", "Candidate", "Provider", "make_provider",
           "register_provider", "Openverse", "WikimediaCommons", "UrlList"]


def _strip_tags(text: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", text or "")).strip()


@register_provider("openverse")
class Openverse(Provider):
    """Openverse (openverse.org) image search: CC-licensed and public-domain works.

    ``GET {base}/v1/images/?q=...&page=N&page_size=M`` -> ``results[]`` with ``url, license,
    license_version, license_url, creator, creator_url, attribution, source,
    foreign_landing_url, title`` (nulls and extra fields tolerated), paged by ``page_count``.
    Anonymous clients get at most 20 per page (the API answers 401 above); with the options
    ``client_id`` and ``client_secret`` (OAuth2 client credentials) a token is fetched from
    ``POST {base}/v1/auth_tokens/token/`` (``access_token``, ``expires_in``), sent as
    ``Authorization: Bearer``, renewed before it expires or once on a 401, and pages may hold
    up to 500.
    """

    default_base_url = "https://api.openverse.org"
    ANON_PAGE_SIZE, AUTH_PAGE_SIZE = 20, 500

    def __init__(self, client: HttpClient, base_url: str | None = None, **options):
        super().__init__(client, base_url, **options)
        self._token: str | None = None
        self._token_until = 0.0
        if bool(options.get("client_id")) != bool(options.get("client_secret")):
            raise LabtfError("Openverse credentials need both a client id and a client secret "
                             "(--openverse-client-id/--openverse-client-secret or "
                             "OPENVERSE_CLIENT_ID/OPENVERSE_CLIENT_SECRET)")

    @property
    def authenticated(self) -> bool:
        """Whether client credentials were given."""
        return bool(self.options.get("client_id") and self.options.get("client_secret"))

    def _auth(self, renew: bool = False) -> dict[str, str]:
        """The Authorization header (fetching or renewing the token), or {} anonymously.

        Raises:
            LabtfError: the token endpoint refused the credentials or answered nonsense.
        """
        if not self.authenticated:
            return {}
        if renew or self._token is None or time.monotonic() >= self._token_until:
            url = f"{self.base_url}/v1/auth_tokens/token/"
            how = ("check --openverse-client-id/--openverse-client-secret (or OPENVERSE_CLIENT_ID/"
                   "OPENVERSE_CLIENT_SECRET)")
            try:
                doc = self.client.get_json(url, form={
                    "grant_type": "client_credentials", "client_id": self.options["client_id"],
                    "client_secret": self.options["client_secret"]})
            except FetchError as exc:
                raise LabtfError(f"Openverse token request to {url} failed: {exc}; {how}") from None
            token = doc.get("access_token") if isinstance(doc, dict) else None
            if not isinstance(token, str) or not token:
                raise LabtfError(f"Openverse token answer from {url} has no access_token; {how}")
            try:
                life = float(doc.get("expires_in") or 3600)
            except (TypeError, ValueError):
                life = 3600.0
            self._token = token
            self._token_until = time.monotonic() + max(0.0, life - min(60.0, life / 10))
            log.info("openverse: token obtained (valid %.0fs; pages up to %d)", life,
                     self.AUTH_PAGE_SIZE)
        return {"Authorization": f"Bearer {self._token}"}

    def _page(self, url: str) -> dict:
        """One search page with the token; a 401 renews the token once."""
        try:
            return self.client.get_json(url, headers=self._auth())
        except FetchError as exc:
            if exc.status != 401 or not self.authenticated:
                raise
            log.info("openverse: 401 with the token (%s); renewing it once", exc)
            return self.client.get_json(url, headers=self._auth(renew=True))

    def search(self, query: str, limit: int) -> Iterator[Candidate]:
        cap = self.AUTH_PAGE_SIZE if self.authenticated else self.ANON_PAGE_SIZE
        page_size = max(1, min(cap, int(self.options.get("page_size") or cap), limit))
        n, page, max_pages = 0, 1, int(self.options.get("max_pages", 20))
        while n < limit and page <= max_pages:
            qs = urllib.parse.urlencode({"q": query, "page": page, "page_size": page_size})
            data = self._page(f"{self.base_url}/v1/images/?{qs}")
            results = data.get("results") or []
            for r in results:
                if not isinstance(r, dict) or not r.get("url"):
                    continue
                s = {k: "" if r.get(k) is None else str(r[k]) for k in (
                    "license", "license_version", "license_url", "creator", "creator_url",
                    "foreign_landing_url", "title", "attribution", "source")}
                yield Candidate(str(r["url"]), self.name, query,
                                s["license"], s["license_version"], s["creator"],
                                s["foreign_landing_url"], s["title"],
                                license_id=normalise_licence(s["license"], s["license_version"],
                                                             s["license_url"]),
                                license_url=s["license_url"], attribution=s["attribution"],
                                creator_url=s["creator_url"], source=s["source"])
                n += 1
                if n >= limit:
                    return
            if not results or page >= int(data.get("page_count") or page):
                return
            page += 1


def _meta(meta: dict, key: str) -> str:
    """A Commons ``extmetadata`` value as plain text ("" when missing or null)."""
    item = meta.get(key) if isinstance(meta, dict) else None
    value = item.get("value") if isinstance(item, dict) else None
    return "" if value is None else _strip_tags(str(value))


#: MIME types downloaded as they are; anything else (SVG, PDF, TIFF, video) only as a thumbnail.
_BITMAP_MIMES = ("image/jpeg", "image/png", "image/gif", "image/webp", "image/bmp")


@register_provider("wikimedia")
class WikimediaCommons(Provider):
    """Wikimedia Commons files via the MediaWiki API (``generator=search`` in namespace 6).

    Asks for bitmap thumbnails (``iiurlwidth``, option ``thumb_width`` [1024]) and downloads
    ``thumburl``, so SVG, PDF and TIFF files arrive as PNG/JPEG renderings; a file without a
    thumbnail is skipped unless it is a bitmap. Licence facts come from ``extmetadata``
    (``LicenseShortName``/``License``, ``LicenseUrl``, ``AttributionRequired``, ``Credit``,
    ``Artist``); missing or null entries are tolerated. Paged with ``continue``. At most 2
    downloads at a time from the hosts of its images (its upload host's rule).
    """

    default_base_url = "https://commons.wikimedia.org/w/api.php"
    download_concurrency = 2

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
                info = (page.get("imageinfo") or [{}])[0] or {}
                mime = str(info.get("mime") or "")
                url = info.get("thumburl") or (info.get("url") if mime in _BITMAP_MIMES else None)
                if not url or (mime and not mime.startswith("image/")):
                    continue
                meta = info.get("extmetadata") or {}
                lic = _meta(meta, "LicenseShortName") or _meta(meta, "License")
                required = _meta(meta, "AttributionRequired").lower()
                yield Candidate(str(url), self.name, query, lic, "", _meta(meta, "Artist"),
                                str(info.get("descriptionurl") or ""), str(page.get("title") or ""),
                                license_id=normalise_licence(lic, "", _meta(meta, "LicenseUrl")),
                                license_url=_meta(meta, "LicenseUrl"), credit=_meta(meta, "Credit"),
                                attribution_required={"true": True, "false": False}.get(required),
                                source="wikimedia")
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
    ``license, license_version, license_url, creator, creator_url, attribution, landing_url,
    title``) or a text file of ``label<TAB>url`` lines.
    Queries are ignored; every URL listed for the class is a candidate. The list is read
    afresh on every run (never taken from ``candidates.jsonl``).
    """

    cacheable = False

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

    def queries_for(self, label: str, queries: list[str]) -> list[str]:
        return [f"(URL list {self.options.get('path')})"]

    def search_class(self, label: str, query: str, limit: int) -> Iterator[Candidate]:
        n = 0
        for row in self._rows():
            if row.get("label") == label and row.get("url") and n < limit:
                n += 1
                r = {k: (row.get(k) or "").strip() for k in (
                    "license", "license_version", "license_url", "creator", "creator_url",
                    "attribution", "landing_url", "title")}
                yield Candidate(row["url"], self.name, "", r["license"], r["license_version"],
                                r["creator"], r["landing_url"], r["title"],
                                license_id=normalise_licence(r["license"], r["license_version"],
                                                             r["license_url"]),
                                license_url=r["license_url"], attribution=r["attribution"],
                                creator_url=r["creator_url"])
