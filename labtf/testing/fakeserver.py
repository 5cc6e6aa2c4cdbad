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
"""
from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeServer:
    """Start with ``with FakeServer(images, queries) as srv:``; ``srv.base`` is the root URL.

    Args:
        images: name -> (bytes, content type).
        queries: search query -> image names returned (in order).
        slow_s: delay of ``/slow/`` responses.
        latency_s: delay added to every ``/img/`` response (simulates a network).
    """

    def __init__(self, images: dict[str, tuple[bytes, str]], queries: dict[str, list[str]] | None = None,
                 slow_s: float = 3.0, latency_s: float = 0.0):
        self.images = images
        self.queries = queries or {}
        self.slow_s = slow_s
        self.latency_s = latency_s
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

            def _json(self, doc: dict) -> None:
                self._send(200, json.dumps(doc).encode(), "application/json")

            def _wiki_page(self, n: str, index: int) -> dict:
                info = {"url": srv.url(n), "descriptionurl": f"{srv.base}/wiki/File:{n}",
                        "mime": srv.images.get(n, (b"", "image/jpeg"))[1],
                        "extmetadata": {"LicenseShortName": {"value": "CC BY-SA 4.0"},
                                        "Artist": {"value": f"<a href='x'>artist {n}</a>"}}}
                return {"title": f"File:{n}", "index": index, "imageinfo": [info]}

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
                with srv._lock:
                    srv.hits[u.path] += 1
                    hits = srv.hits[u.path]
                try:
                    self._route(u.path, parts, q, hits)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _route(self, path: str, parts: list[str], q: dict, hits: int) -> None:
                if path.startswith("/v1/images") and q.get("q") == "unauthorized":
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
                elif path.startswith("/v1/images"):
                    names = srv.queries.get(q.get("q", ""), [])
                    page, size = int(q.get("page", 1)), int(q.get("page_size", 20))
                    chunk = names[(page - 1) * size: page * size]
                    self._json({"result_count": len(names), "page_count": -(-len(names) // size),
                                "results": [{"url": srv.url(n), "license": "by", "license_version": "4.0",
                                             "creator": f"creator of {n}", "title": n,
                                             "foreign_landing_url": f"{srv.base}/page/{n}"} for n in chunk]})
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
