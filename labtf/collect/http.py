"""A small, bounded HTTP client for collecting images (stdlib ``urllib`` only).

Every request has a socket timeout and a total deadline, a per-host rate limit (applied to
each redirect target's host too), an optional per-host cap on concurrent requests
(``upload.wikimedia.org``: 2), retries with exponential backoff on 5xx/429, timeouts and
dropped connections (never on other 4xx), and bodies are streamed with a hard size cap.
The User-Agent is configurable (:func:`user_agent`).
"""
from __future__ import annotations

import http.client
import json
import logging
import platform
import random
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from labtf import __version__
from labtf.errors import LabtfError

log = logging.getLogger(__name__)

_PY = ".".join(platform.python_version_tuple()[:2])
#: Sent when no contact is configured (Wikimedia refuses it; :func:`user_agent`).
USER_AGENT = f"labtf-collect/{__version__} (research dataset builder) Python-urllib/{_PY}"
#: Hosts whose operators ask for few parallel connections: host -> most concurrent requests.
HOST_CONCURRENCY = {"upload.wikimedia.org": 2}
_CONTACT_RE = re.compile(r"[^\s@;()<>]+@[^\s@;()<>]+\.[a-z]{2,}|https?://[^\s;()]+\.[^\s;()]+",
                         re.IGNORECASE)


def has_contact(text: str | None) -> bool:
    """Whether ``text`` holds an e-mail address or an http(s) URL (contact details)."""
    return bool(text and _CONTACT_RE.search(text))


def user_agent(contact: str | None = None, override: str | None = None) -> str:
    """The User-Agent labtf sends: ``override`` as given, else
    ``labtf-collect/VERSION (CONTACT) Python-urllib/X.Y`` (Wikimedia's policy format).

    Raises:
        LabtfError: control characters (they would split the HTTP header).
    """
    for what, value in (("--user-agent", override), ("--contact", contact)):
        if value and any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
            raise LabtfError(f"{what} contains control characters; give one line of text")
    if override:
        return override.strip()
    if not contact:
        return USER_AGENT
    return f"labtf-collect/{__version__} ({contact.strip()}; dataset builder) Python-urllib/{_PY}"


class FetchError(Exception):
    """A request that failed; ``retryable`` says whether trying again may help."""

    def __init__(self, message: str, retryable: bool, status: int | None = None,
                 retry_after: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after   # seconds the server asked us to wait (429/503)


@dataclass
class Response:
    """A fetched body with the facts the collector records."""

    url: str
    final_url: str
    status: int
    content_type: str
    body: bytes
    attempts: int


class HostRateLimiter:
    """At most ``per_second`` request starts per host (0: unlimited)."""

    def __init__(self, per_second: float):
        self.interval = 1.0 / per_second if per_second > 0 else 0.0
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait(self, host: str) -> None:
        """Block until this host may be contacted again."""
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next.get(host, now))
            self._next[host] = start + self.interval
        if start > now:
            time.sleep(start - now)


class _LimitedRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects, waiting for the rate limit of each redirect target's host too."""

    def __init__(self, limiter: HostRateLimiter):
        super().__init__()
        self.limiter = limiter

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102 (urllib hook)
        scheme = urllib.parse.urlsplit(urllib.parse.urljoin(req.full_url, newurl)).scheme.lower()
        if scheme not in ("http", "https"):
            raise FetchError(f"redirect to unsupported URL scheme '{scheme}' refused (HTTP {code})",
                             retryable=False, status=code)
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None:
            self.limiter.wait(urllib.parse.urlsplit(new.full_url).netloc)
        return new


class HttpClient:
    """GET with timeouts, retries, backoff, per-host rate limit and size cap.

    Args:
        timeout: seconds per socket operation (connect, each read).
        total_timeout: seconds for a whole request (connect, headers, body) [3 x timeout].
        retries: extra attempts after the first for retryable failures.
        backoff: first backoff delay in seconds; doubles per attempt (with jitter).
        rate_per_host: request starts per second per host (0: unlimited).
        max_bytes: largest body accepted; streaming stops past it.
        user_agent: the User-Agent header [:data:`USER_AGENT`].
        host_concurrency: host -> most concurrent requests [:data:`HOST_CONCURRENCY`].
    """

    def __init__(self, timeout: float = 10.0, total_timeout: float | None = None, retries: int = 3,
                 backoff: float = 0.5, rate_per_host: float = 4.0, max_bytes: int = 20 << 20,
                 user_agent: str = USER_AGENT, host_concurrency: dict[str, int] | None = None):
        self.timeout = timeout
        self.user_agent = user_agent
        self._slots: dict[str, tuple[int, threading.BoundedSemaphore]] = {}
        self._slots_lock = threading.Lock()
        for host, n in (HOST_CONCURRENCY if host_concurrency is None else host_concurrency).items():
            self.limit_host(host, n)
        self.total_timeout = float(total_timeout) if total_timeout else 3.0 * timeout
        self.retries = max(0, int(retries))
        self.backoff = backoff
        self.limiter = HostRateLimiter(rate_per_host)
        self.max_bytes = max_bytes
        self._opener = urllib.request.build_opener(_LimitedRedirects(self.limiter))

    def limit_host(self, host: str, n: int) -> None:
        """Allow at most ``n`` concurrent requests to ``host`` (``name[:port]``); the
        smallest limit set wins."""
        n = max(1, int(n))
        with self._slots_lock:
            old = self._slots.get(host.lower())
            if old is None or n < old[0]:
                self._slots[host.lower()] = (n, threading.BoundedSemaphore(n))

    def get(self, url: str, accept: str = "*/*", max_bytes: int | None = None,
            type_prefixes: tuple[str, ...] = (), headers: dict[str, str] | None = None,
            data: bytes | None = None) -> Response:
        """Fetch ``url`` with retries (POST ``data`` when given).

        A host with a concurrency limit (:meth:`limit_host`) is waited for first; the
        total deadline starts once a slot is free.

        Args:
            url: http(s) URL.
            accept: Accept header.
            max_bytes: size cap for this call [the client's].
            type_prefixes: accepted Content-Type prefixes (empty: any).
            headers: extra request headers (e.g. ``Authorization``).
            data: a form body to POST instead of a GET.

        Returns:
            The response (status 200..299).

        Raises:
            FetchError: after the last attempt, or at once when not retryable.
        """
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise FetchError(f"unsupported URL scheme '{parts.scheme}'", retryable=False)
        slot = self._slots.get(parts.netloc.lower()) or self._slots.get((parts.hostname or "").lower())
        if slot is None:
            return self._get(url, accept, max_bytes, type_prefixes, headers, data)
        with slot[1]:
            return self._get(url, accept, max_bytes, type_prefixes, headers, data)

    def _get(self, url: str, accept: str, max_bytes: int | None, type_prefixes: tuple[str, ...],
             headers: dict[str, str] | None, data: bytes | None) -> Response:
        last: FetchError | None = None
        t0 = time.monotonic()
        deadline = t0 + self.total_timeout   # one deadline for all attempts of this URL
        for attempt in range(1, self.retries + 2):
            try:
                return self._once(url, accept, max_bytes or self.max_bytes, type_prefixes, attempt,
                                  deadline, headers, data)
            except FetchError as exc:
                last = exc
                delay = self.backoff * 2 ** (attempt - 1) * (1 + 0.25 * random.random())
                if exc.retry_after is not None:   # the server said how long: honour it
                    delay = exc.retry_after
                if (not exc.retryable or attempt > self.retries
                        or time.monotonic() + delay >= deadline):
                    if exc.retry_after is not None and exc.retryable:
                        last = FetchError(f"{exc}; the server asks to wait {exc.retry_after:g}s "
                                          "(Retry-After), more than this request's time left",
                                          False, exc.status, exc.retry_after)
                    break
                log.debug("retry %d for %s in %.2fs: %s", attempt, url, delay, exc)
                time.sleep(delay)
        assert last is not None
        raise FetchError(f"{last} (after {attempt} attempt(s), {time.monotonic() - t0:.1f}s)",
                         last.retryable, last.status)

    def get_json(self, url: str, headers: dict[str, str] | None = None,
                 form: dict[str, str] | None = None) -> dict:
        """Fetch and parse a JSON document (POST ``form`` url-encoded when given).

        Raises:
            FetchError: transport failure or invalid JSON.
        """
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        if data is not None:
            headers = {**(headers or {}), "Content-Type": "application/x-www-form-urlencoded"}
        resp = self.get(url, accept="application/json", max_bytes=8 << 20, headers=headers,
                        data=data)
        try:
            return json.loads(resp.body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FetchError(f"invalid JSON from {url}: {exc}", retryable=False) from None

    def _once(self, url: str, accept: str, max_bytes: int, type_prefixes: tuple[str, ...],
              attempt: int, deadline: float, headers: dict[str, str] | None = None,
              data: bytes | None = None) -> Response:
        host = urllib.parse.urlsplit(url).netloc
        self.limiter.wait(host)
        req = urllib.request.Request(url, data=data, headers={
            "User-Agent": self.user_agent, "Accept": accept, **(headers or {})})
        start = time.monotonic()
        try:
            with self._opener.open(req, timeout=max(0.05, min(self.timeout, deadline - start))) as r:
                ctype = (r.headers.get("Content-Type") or "").split(";")[0].strip().lower()
                if type_prefixes and not ctype.startswith(type_prefixes):
                    raise FetchError(f"content type '{ctype or 'none'}' is not an image",
                                     retryable=False, status=r.status)
                length = r.headers.get("Content-Length")
                if length and length.isdigit() and int(length) > max_bytes:
                    raise FetchError(f"too large: {int(length)} bytes > limit {max_bytes}",
                                     retryable=False, status=r.status)
                chunks, size = [], 0
                sock = _socket_of(r)
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise FetchError(f"timed out: body not complete after "
                                         f"{time.monotonic() - start:.1f}s (total limit "
                                         f"{self.total_timeout:g}s, {size} bytes read)", retryable=True)
                    if sock is not None:   # no single read may outlive the total deadline
                        sock.settimeout(max(0.05, min(self.timeout, left)))
                    chunk = r.read1(64 << 10)   # what has arrived, not a full 64 KB
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > max_bytes:
                        raise FetchError(f"too large: over limit {max_bytes} bytes (stream aborted)",
                                         retryable=False, status=r.status)
                    chunks.append(chunk)
                if length and length.isdigit() and size < int(length):
                    raise FetchError(f"connection closed after {size} of {length} bytes",
                                     retryable=True)
                return Response(url, r.geturl(), r.status, ctype, b"".join(chunks), attempt)
        except urllib.error.HTTPError as exc:
            code, detail, wait = exc.code, _error_detail(exc), _retry_after(exc.headers)
            exc.close()
            raise FetchError(f"HTTP {code}" + (f": {detail}" if detail else ""),
                             retryable=code >= 500 or code == 429, status=code,
                             retry_after=wait) from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            timeout = isinstance(reason, (socket.timeout, TimeoutError))
            raise FetchError(f"{'timed out' if timeout else 'connection failed'}: {reason}",
                             retryable=True) from None
        except (socket.timeout, TimeoutError):
            raise FetchError(f"timed out after {time.monotonic() - start:.1f}s", retryable=True) from None
        except (http.client.HTTPException, ConnectionError, OSError) as exc:
            raise FetchError(f"connection dropped: {exc.__class__.__name__}: {exc}",
                             retryable=True) from None


def _socket_of(resp) -> socket.socket | None:
    """The socket under an ``http.client`` response (None if urllib wraps it otherwise)."""
    try:
        return resp.fp.raw._sock
    except AttributeError:
        return None


def _error_detail(exc: urllib.error.HTTPError) -> str:
    """The API's own words from an error body (``detail``, ``error.info``, ``message``, OAuth2
    ``error``/``error_description``, or a text/plain 403/429 body)."""
    try:
        text = exc.read(16 << 10).decode("utf-8", "replace")
    except (OSError, http.client.HTTPException):
        return ""
    try:
        doc = json.loads(text)
    except ValueError:   # a plain-text refusal (e.g. Wikimedia's User-Agent policy) is shown too
        plain = (exc.headers.get("Content-Type") or "").startswith("text/plain")
        return " ".join(text.split())[:300] if plain and exc.code in (403, 429) else ""
    if not isinstance(doc, dict):
        return ""
    err = doc.get("error")
    text = (doc.get("detail") or (err.get("info") if isinstance(err, dict) else err)
            or doc.get("message"))
    if text and doc.get("error_description"):   # OAuth2: {"error": code, "error_description"}
        text = f"{text}: {doc['error_description']}"
    return " ".join(str(text).split())[:300] if text else ""


def _retry_after(headers) -> float | None:
    """Seconds of a ``Retry-After: N`` header (an HTTP date counts as 60 s), else None."""
    value = (headers.get("Retry-After") or "").strip() if headers is not None else ""
    if not value:
        return None
    return float(value) if value.isdigit() else 60.0
