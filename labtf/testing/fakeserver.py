"""A loopback stand-in for image-search APIs and image hosts (tests and benchmarks only).

Serves, on 127.0.0.1 only: ``/v1/images/`` (Openverse-shaped JSON),
``/w/api.php`` (MediaWiki ``generator=search`` + ``imageinfo`` JSON), ``/img/NAME``
(the images given), and misbehaving endpoints: ``/slow/NAME`` (delays),
``/status/CODE``, ``/flaky/K/NAME`` (K times 500, then the image),
``/redirect/NAME`` (302 to ``/img/NAME``), ``/away/NAME`` (302 to the same path on host
``localhost``), ``/html``, ``/notimage`` (garbage
with an image type), ``/huge`` (endless image/jpeg stream, bounded at 64 MB) and
``/drop/NAME`` (closes the connection mid-body); Openverse queries ``unauthorized`` (401)
and ``throttled`` (429 + Retry-After) and Wikimedia ``api-error-CODE`` (HTTP 200 ``error``;
``ratelimited`` succeeds on the next call) answer like the real APIs' errors;
``/drip/SECONDS`` (an image/jpeg body of one byte per second, no Content-Length) and
``/ftp`` (302 to an ``ftp://`` URL).

Shaped like the documented APIs: Openverse results carry every documented field, with
``null`` where the API has one (``creator_url``, ``category``, ``filesize``; ``creator`` for
names in ``no_creator``), ``page``/``page_count``/``page_size``; anonymous ``page_size`` over
20 answers 401, over 500 400; ``POST /v1/auth_tokens/token/`` (form ``grant_type=
client_credentials, client_id, client_secret``; ``clients`` holds the valid pairs) answers
``access_token, expires_in, scope, token_type`` or 401 ``{"error": "invalid_client"}``;
an unknown or expired Bearer token answers 401. MediaWiki pages carry ``imageinfo`` with
``url``, ``thumburl`` (``NAME.png`` for an SVG ``NAME``), ``mime`` and ``extmetadata``
entries as ``{"value", "source", "hidden"}`` (``wiki_meta`` overrides per image; None drops
``extmetadata``), paged by ``continue: {gsroffset, continue}``; a User-Agent without an
e-mail address or URL gets 403 like Wikimedia's. Every request is logged in ``requests``
(method, path, User-Agent, Authorization) and the most concurrent requests per first path
part in ``max_inflight``.
"""
from __future__ import annotations

import json
import re
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeServer:
    """Start with ``with FakeServer(images, queries) as srv:``; ``srv.base`` is the root URL.

    Args:
        images: name -> (bytes, content type).
        queries: search query -> image names returned (in order).
        slow_s: delay of ``/slow/`` responses.
        latency_s: delay added to every ``/img/`` response (simulates a network).
        clients: Openverse client id -> secret accepted by the token endpoint.
        token_life: ``expires_in`` of the tokens it hands out (seconds).
        licences: image name -> (Openverse ``license``, ``license_version``) [("by", "4.0")].
        wiki_meta: image name -> extmetadata values (None: no ``extmetadata`` at all).
        no_creator: image names whose Openverse ``creator`` is null.
    """

    def __init__(self, images: dict[str, tuple[bytes, str]], queries: dict[str, list[str]] | None = None,
                 slow_s: float = 3.0, latency_s: float = 0.0, clients: dict[str, str] | None = None,
                 token_life: float = 36000, licences: dict[str, tuple[str, str]] | None = None,
                 wiki_meta: dict[str, dict | None] | None = None, no_creator: tuple = ()):
        self.images = images
        self.queries = queries or {}
        self.slow_s = slow_s
        self.latency_s = latency_s
        self.clients = clients or {}
        self.token_life = token_life
        self.licences = licences or {}
        self.wiki_meta = wiki_meta or {}
        self.no_creator = set(no_creator)
        self.tokens: dict[str, float] = {}   # token -> expiry (monotonic)
        self.requests: list[dict] = []
        self.max_inflight: Counter = Counter()
        self._inflight: Counter = Counter()
        self.hits: Counter = Counter()
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FakeServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def url(self, name: str) -> str:
        """URL of an image."""
        return f"{self.base}/img/{urllib.parse.quote(name)}"

    def _handler(self):
        srv = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _send(self, code: int, body: bytes, ctype: str, extra: dict | None = None) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _json(self, doc: dict, code: int = 200, extra: dict | None = None) -> None:
                self._send(code, json.dumps(doc).encode(), "application/json", extra)

            def _wiki_page(self, n: str, index: int) -> dict:
                mime = "image/svg+xml" if n.endswith(".svg") else srv.images.get(n, (b"", "image/jpeg"))[1]
                meta = {"DateTime": "2019-05-04 10:00:00", "ObjectName": n.rsplit(".", 1)[0],
                        "LicenseShortName": "CC BY-SA 4.0", "UsageTerms": "Creative Commons "
                        "Attribution-Share Alike 4.0", "AttributionRequired": "true",
                        "LicenseUrl": "https://creativecommons.org/licenses/by-sa/4.0",
                        "Copyrighted": "True", "Restrictions": "", "License": "cc-by-sa-4.0",
                        "Credit": "<span class=\"int-own-work\">Own work</span>",
                        "Artist": f"<a href='//commons.wikimedia.org/wiki/User:X'>artist {n}</a>"}
                meta.update(srv.wiki_meta.get(n) or {})
                info = {"url": srv.url(n), "descriptionurl": f"{srv.base}/wiki/File:{n}",
                        "descriptionshorturl": f"{srv.base}/w/index.php?curid={index}",
                        "thumburl": srv.url(n + ".png" if n.endswith(".svg") else n),
                        "thumbwidth": 1024, "thumbheight": 768,
                        "responsiveUrls": {"2": srv.url(n)}, "mime": mime}
                if not (n in srv.wiki_meta and srv.wiki_meta[n] is None):
                    info["extmetadata"] = {k: {"value": v, "source": "commons-desc-page",
                                               "hidden": ""} for k, v in meta.items() if v is not None}
                return {"pageid": 1000 + index, "ns": 6, "title": f"File:{n}", "index": index,
                        "imagerepository": "local", "imageinfo": [info]}

            def _openverse_result(self, n: str) -> dict:
                lic, ver = srv.licences.get(n, ("by", "4.0"))
                path = {"cc0": "publicdomain/zero", "pdm": "publicdomain/mark"}.get(lic, f"licenses/{lic}")
                creator = None if n in srv.no_creator else f"creator of {n}"
                return {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, n)), "title": n,
                        "indexed_on": "2021-03-01T00:00:00Z", "foreign_landing_url": f"{srv.base}/page/{n}",
                        "url": srv.url(n), "creator": creator, "creator_url": None, "license": lic,
                        "license_version": ver,
                        "license_url": f"https://creativecommons.org/{path}/{ver}/",
                        "provider": "flickr", "source": "flickr", "category": None, "filesize": None,
                        "filetype": None, "tags": [{"name": "lab", "accuracy": None}],
                        "attribution": f'"{n}" by {creator or "unknown"} is licensed under '
                                       f"{lic.upper()} {ver}.",
                        "fields_matched": ["title"], "mature": False, "height": 60, "width": 80,
                        "thumbnail": f"{srv.base}/v1/images/x/thumb/", "detail_url": "",
                        "related_url": "", "unstable__sensitive": []}

            def _bearer_ok(self) -> bool | None:
                """None: no token sent; True/False: a known, unexpired token or not."""
                auth = self.headers.get("Authorization") or ""
                if not auth.startswith("Bearer "):
                    return None
                expiry = srv.tokens.get(auth[len("Bearer "):])
                return expiry is not None and time.monotonic() < expiry

            def _log(self, method: str, path: str, body: str = "") -> None:
                with srv._lock:
                    srv.requests.append({"method": method, "path": path, "body": body,
                                         "user_agent": self.headers.get("User-Agent", ""),
                                         "authorization": self.headers.get("Authorization", "")})

            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                form = dict(urllib.parse.parse_qsl(body))
                self._log("POST", self.path, "&".join(sorted(form)))   # field names only
                if urllib.parse.urlsplit(self.path).path != "/v1/auth_tokens/token/":
                    self._send(404, b"not found", "text/plain")
                elif form.get("grant_type") != "client_credentials":
                    self._json({"error": "unsupported_grant_type"}, 400)
                elif srv.clients.get(form.get("client_id", "")) != form.get("client_secret") or \
                        not form.get("client_secret"):
                    self._json({"error": "invalid_client"}, 401)
                else:
                    token = uuid.uuid4().hex
                    srv.tokens[token] = time.monotonic() + srv.token_life
                    self._json({"access_token": token, "scope": "read write groups",
                                "expires_in": srv.token_life, "token_type": "Bearer"})

            def _image(self, name: str) -> None:
                item = srv.images.get(name)
                if item is None:
                    self._send(404, b"not found", "text/plain")
                else:
                    self._send(200, item[0], item[1])

            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                u = urllib.parse.urlsplit(self.path)
                q = dict(urllib.parse.parse_qsl(u.query))
                parts = [urllib.parse.unquote(p) for p in u.path.split("/") if p]
                self._log("GET", self.path)
                kind = parts[0] if parts else ""
                with srv._lock:
                    srv.hits[u.path] += 1
                    hits = srv.hits[u.path]
                    srv._inflight[kind] += 1
                    srv.max_inflight[kind] = max(srv.max_inflight[kind], srv._inflight[kind])
                try:
                    self._route(u.path, parts, q, hits)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    with srv._lock:
                        srv._inflight[kind] -= 1

            def _route(self, path: str, parts: list[str], q: dict, hits: int) -> None:
                if path == "/w/api.php" and not re.search(r"@|https?://", self.headers.get(
                        "User-Agent", "")):
                    self._send(403, b"Please set a user-agent and respect our robot policy "
                                    b"https://w.wiki/4wJS. See also T400119.", "text/plain")
                elif path.startswith("/v1/images") and q.get("q") == "unauthorized":
                    self._send(401, json.dumps({"detail": "Authentication credentials were not "
                                                          "provided."}).encode(), "application/json")
                elif path.startswith("/v1/images") and q.get("q") == "throttled":
                    self._send(429, json.dumps({"detail": "Request was throttled. Expected "
                                                          "available in 3600 seconds."}).encode(),
                               "application/json", {"Retry-After": "3600"})
                elif path == "/w/api.php" and q.get("gsrsearch", "").startswith("api-error-"):
                    code = q["gsrsearch"][len("api-error-"):]   # first answer: an Action API error
                    if hits == 1 or code != "ratelimited":
                        self._json({"error": {"code": code, "info": f"fake {code}", "*": "see docs"},
                                    "servedby": "fake"})
                    else:
                        self._json({"batchcomplete": "", "query": {"pages": {
                            "7": self._wiki_page(next(iter(srv.images)), 0)}}})
                elif path.startswith("/v1/images") and self._bearer_ok() is False:
                    self._json({"detail": "Authentication credentials were not provided."}, 401,
                               {"WWW-Authenticate": 'Bearer realm="api",error="invalid_token"'})
                elif path.startswith("/v1/images") and int(q.get("page_size", 20)) > 20 \
                        and not self._bearer_ok():
                    self._json({"detail": "Authentication credentials were not provided. To use a "
                                          "page_size over 20, authenticate."}, 401)
                elif path.startswith("/v1/images") and int(q.get("page_size", 20)) > 500:
                    self._json({"detail": {"page_size": ["Ensure this value is less than or equal "
                                                         "to 500."]}}, 400)
                elif path.startswith("/v1/images"):
                    names = srv.queries.get(q.get("q", ""), [])
                    page, size = int(q.get("page", 1)), int(q.get("page_size", 20))
                    chunk = names[(page - 1) * size: page * size]
                    self._json({"result_count": len(names), "page_count": -(-len(names) // size),
                                "page_size": size, "page": page, "warnings": [],
                                "results": [self._openverse_result(n) for n in chunk]})
                elif path == "/w/api.php":
                    names = srv.queries.get(q.get("gsrsearch", ""), [])
                    off, lim = int(q.get("gsroffset", 0)), int(q.get("gsrlimit", 10))
                    chunk = names[off: off + lim]
                    pages = {str(1000 + off + i): self._wiki_page(n, off + i) for i, n in enumerate(chunk)}
                    doc = {"batchcomplete": "", "query": {"pages": pages}} if pages else {"batchcomplete": ""}
                    if off + lim < len(names):
                        doc["continue"] = {"gsroffset": off + lim, "continue": "gsroffset||"}
                    self._json(doc)
                elif parts[:1] == ["img"] and len(parts) == 2:
                    if srv.latency_s:
                        time.sleep(srv.latency_s)
                    self._image(parts[1])
                elif parts[:1] == ["slow"]:
                    time.sleep(srv.slow_s)
                    self._image(parts[1])
                elif parts[:1] == ["status"]:
                    self._send(int(parts[1]), b"error", "text/plain")
                elif parts[:1] == ["flaky"]:
                    if hits <= int(parts[1]):
                        self._send(500, b"try again", "text/plain")
                    else:
                        self._image(parts[2])
                elif parts[:1] == ["away"]:   # the same server under another host name
                    port = self.server.server_address[1]
                    self._send(302, b"", "text/plain",
                               {"Location": f"http://localhost:{port}/img/{urllib.parse.quote(parts[1])}"})
                elif parts[:1] == ["redirect"]:
                    self._send(302, b"", "text/plain", {"Location": f"/img/{urllib.parse.quote(parts[1])}"})
                elif parts[:1] == ["drip"]:
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    for _ in range(int(parts[1])):
                        self.wfile.write(b"\xff")
                        self.wfile.flush()
                        time.sleep(1.0)
                    self.close_connection = True
                elif path == "/ftp":
                    self._send(302, b"", "text/plain", {"Location": "ftp://127.0.0.1/x.jpg"})
                elif path == "/html":
                    self._send(200, b"<html><body>not an image</body></html>", "text/html")
                elif path == "/notimage":
                    self._send(200, b"\xff\xd8\xff garbage, not a JPEG" * 20, "image/jpeg")
                elif path == "/huge":
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    block = b"\0" * 65536
                    for _ in range(1024):  # at most 64 MB, stops when the client hangs up
                        self.wfile.write(block)
                    self.close_connection = True
                elif parts[:1] == ["drop"]:
                    body = srv.images[parts[1]][0]
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 3])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                else:
                    self._send(404, b"not found", "text/plain")

        return Handler
