"""A small, bounded HTTP client for collecting images (stdlib ``urllib`` only).

Every request has a socket timeout and a total deadline, a per-host rate limit (applied to
each redirect target's host too),
retries with exponential backoff on 5xx/429, timeouts and dropped connections
(never on other 4xx), and bodies are streamed with a hard size cap.
"""
from __future__ import annotations

import http.client
import json
import logging
import random
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

log = logging.getLogger(__name__)

USER_AGENT = "labtf-collect/1.0 (+https://github.com/; research dataset builder)"


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
    """

    def __init__(self, timeout: float = 10.0, total_timeout: float | None = None, retries: int = 3,
                 backoff: float = 0.5, rate_per_host: float = 4.0, max_bytes: int = 20 << 20):
        self.timeout = timeout
        self.total_timeout = float(total_timeout) if total_timeout else 3.0 * timeout
        self.retries = max(0, int(retries))
        self.backoff = backoff
        self.limiter = HostRateLimiter(rate_per_host)
        self.max_bytes = max_bytes
        self._opener = urllib.request.build_opener(_LimitedRedirects(self.limiter))

    def get(self, url: str, accept: str = "*/*", max_bytes: int | None = None,
            type_prefixes: tuple[str, ...] = ()) -> Response:
        """Fetch ``url`` with retries.

        Args:
            url: http(s) URL.
            accept: Accept header.
            max_bytes: size cap for this call [the client's].
            type_prefixes: accepted Content-Type prefixes (empty: any).

        Returns:
            The response (status 200..299).

        Raises:
            FetchError: after the last attempt, or at once when not retryable.
        """
        scheme = urllib.parse.urlsplit(url).scheme
        if scheme not in ("http", "https"):
            raise FetchError(f"unsupported URL scheme '{scheme}'", retryable=False)
        last: FetchError | None = None
        t0 = time.monotonic()
        deadline = t0 + self.total_timeout   # one deadline for all attempts of this URL
        for attempt in range(1, self.retries + 2):
            try:
                return self._once(url, accept, max_bytes or self.max_bytes, type_prefixes, attempt,
                                  deadline)
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

    def get_json(self, url: str) -> dict:
        """Fetch and parse a JSON document.

        Raises:
            FetchError: transport failure or invalid JSON.
        """
        resp = self.get(url, accept="application/json", max_bytes=8 << 20)
        try:
            return json.loads(resp.body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FetchError(f"invalid JSON from {url}: {exc}", retryable=False) from None

    def _once(self, url: str, accept: str, max_bytes: int, type_prefixes: tuple[str, ...],
              attempt: int, deadline: float) -> Response:
        host = urllib.parse.urlsplit(url).netloc
        self.limiter.wait(host)
        req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": accept})
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
    """The API's own words from an error body (``detail``, ``error.info``, ``message``)."""
    try:
        doc = json.loads(exc.read(16 << 10).decode("utf-8", "replace"))
    except (OSError, ValueError, http.client.HTTPException):
        return ""
    if not isinstance(doc, dict):
        return ""
    err = doc.get("error")
    text = doc.get("detail") or (err.get("info") if isinstance(err, dict) else err) or doc.get("message")
    return " ".join(str(text).split())[:300] if text else ""


def _retry_after(headers) -> float | None:
    """Seconds of a ``Retry-After: N`` header (an HTTP date counts as 60 s), else None."""
    value = (headers.get("Retry-After") or "").strip() if headers is not None else ""
    if not value:
        return None
    return float(value) if value.isdigit() else 60.0
