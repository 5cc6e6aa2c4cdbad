"""Static hosting of a web bundle (``labtf export --format web``) on the standard library.

``labtf serve DIR`` lands here when DIR is a web bundle. Any static server works as long as
``.wasm`` goes out as ``application/wasm``; this one also sends the page's Content-Security-
Policy as a header, and ``no-cache`` on the page shell and the service worker so a re-export
reaches phones on their next visit with a network.
"""
from __future__ import annotations

import functools
import logging
import mimetypes
import os
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

#: Files that make a folder a labtf web bundle.
BUNDLE_FILES = ("index.html", "model.json", "model.tflite", "sw.js")

#: The page's policy: its own origin only; wasm compiles; nothing leaves the device.
CSP = ("default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; connect-src 'self'; "
       "img-src 'self' blob: data:; style-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'none'")

#: Types some platforms' mimetypes tables lack.
TYPES = {".wasm": "application/wasm", ".webmanifest": "application/manifest+json",
         ".js": "text/javascript", ".tflite": "application/octet-stream",
         ".json": "application/json"}

#: Revalidated on every visit (the rest is cached by the service worker).
NO_CACHE = ("/", "/index.html", "/sw.js", "/manifest.webmanifest", "/model.json")


def is_web_bundle(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder written by the web exporter."""
    path = Path(path)
    return path.is_dir() and all((path / name).is_file() for name in BUNDLE_FILES)


class BundleHandler(SimpleHTTPRequestHandler):
    """Static files with the right types, the CSP header and quiet logs."""

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, **TYPES}

    def end_headers(self) -> None:
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        if self.path.split("?")[0] in NO_CACHE:
            self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def guess_type(self, path) -> str:
        ext = os.path.splitext(str(path))[1].lower()
        return TYPES.get(ext) or mimetypes.guess_type(str(path))[0] or "application/octet-stream"

    def log_message(self, fmt: str, *args) -> None:
        log.info("%s %s", self.address_string(), fmt % args)


def make_server(folder: str | os.PathLike, host: str = "127.0.0.1",
                port: int = 8000) -> ThreadingHTTPServer:
    """A threaded HTTP server for ``folder`` (not started; ``port`` 0 takes a free one)."""
    handler = functools.partial(BundleHandler, directory=str(Path(folder).resolve()))
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def serve_static(folder: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000,
                 ready: Callable[[str], None] | None = None) -> None:
    """Serve a web bundle until interrupted.

    Args:
        folder: the bundle.
        host: address to listen on (``0.0.0.0`` for phones on the same network; browsers
            install the app and run its service worker only over https or on localhost).
        port: port (0: any free port).
        ready: called with the base URL once listening.
    """
    server = make_server(folder, host, port)
    url = f"http://{host}:{server.server_address[1]}"
    if ready:
        ready(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
