"""Drive the exported web app (labtf export --format web) in headless Chromium.

Shared by tests/test_web.py and benchmarks/web_app.py: serve the bundle on loopback,
open it at phone width, classify files through the page's real file input, cut the
network and reload (the service worker must carry it), and compare with Python's
predictor on the same .tflite. Standard library + numpy + tests/cdp.py.
"""
from __future__ import annotations

import base64
import threading
import time
from pathlib import Path

import numpy as np

from cdp import Browser, chromium_path

PHONE = {"width": 360, "height": 780, "deviceScaleFactor": 2, "mobile": True}


class BundleServer:
    """The bundle on 127.0.0.1 (labtf.serving.static) in a thread; ``stop()`` cuts it."""

    def __init__(self, folder: Path):
        from labtf.serving.static import make_server

        self.httpd = make_server(folder, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.stopped = False

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.httpd.shutdown()
            self.httpd.server_close()


def _classify(page, path: Path, timeout: float = 60.0) -> dict:
    before = page.eval("window.labtf.count")
    page.upload("#file", path)
    if not page.wait_for(f"window.labtf.count > {before}", timeout):
        raise TimeoutError(f"the page did not answer for {path}")
    return page.eval("({last: window.labtf.last, error: window.labtf.error})")


def request_urls(browser: Browser) -> list[str]:
    """Every URL the page asked for (CDP Network.requestWillBeSent)."""
    return [e["params"]["request"]["url"] for e in browser.events
            if e.get("method") == "Network.requestWillBeSent"]


def run_page(bundle: Path, images: list[Path], profile: Path, screenshot: Path | None = None,
             offline: bool = True) -> dict:
    """Classify ``images`` in the page; returns per-image results and the checks' figures.

    Returns:
        dict with ``results`` (one per image: probs, cam, camShape, ms, prepMs), ``load_s``,
        ``urls`` (every request), ``violations`` (CSP), ``scroll_width``, ``history``,
        ``offline`` (reloaded with the network cut and the server stopped: ready, same
        answer for the first image), ``manifest_errors``.
    """
    server = BundleServer(bundle)
    out: dict = {"url": server.url}
    try:
        with Browser(chromium_path(), profile, timeout=60) as browser:
            page = browser.open("about:blank")
            page.send("Network.enable")
            page.send("Emulation.setDeviceMetricsOverride", PHONE)
            t0 = time.monotonic()
            page.send("Page.navigate", {"url": server.url})
            if not page.wait_for("window.labtf && (window.labtf.ready || window.labtf.error)", 120):
                raise TimeoutError("the page did not load")
            out["load_s"] = time.monotonic() - t0
            err = page.eval("window.labtf.error")
            if err:
                raise RuntimeError(f"page error: {err}")
            results = []
            for path in images:
                r = _classify(page, path)
                if r["error"]:
                    raise RuntimeError(f"{path}: {r['error']}")
                results.append(r["last"])
            out["results"] = results
            out["history"] = page.eval("document.querySelectorAll('#history li').length")
            out["scroll_width"] = page.eval("document.documentElement.scrollWidth")
            if screenshot is not None:
                page.eval("window.scrollTo(0, 0)")
                shot = page.send("Page.captureScreenshot", {"format": "png"})
                screenshot.write_bytes(base64.b64decode(shot["data"]))
            manifest = page.send("Page.getAppManifest")
            out["manifest_errors"] = [e.get("message") for e in manifest.get("errors", [])]
            if offline:
                out["offline_ready"] = page.wait_for("window.labtf.offlineReady", 60)
                page.send("Network.emulateNetworkConditions", {
                    "offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
                server.stop()
                page.send("Page.reload", {"ignoreCache": False})
                time.sleep(0.5)
                ok = page.wait_for("window.labtf && (window.labtf.ready || window.labtf.error)", 120)
                again = _classify(page, images[0]) if ok and not page.eval("window.labtf.error") \
                    else {"error": page.eval("window.labtf && window.labtf.error"), "last": None}
                out["offline"] = {"ready": ok, "error": again["error"],
                                  "probs": again["last"] and again["last"]["probs"]}
            out["violations"] = page.eval("window.labtf.violations")
            out["urls"] = request_urls(browser)
    finally:
        server.stop()
    return out


def compare(page_results: list[dict], probs: np.ndarray, cams: np.ndarray) -> dict:
    """Top-1 agreement, max |dp| and CAM Pearson r of the page against Python."""
    from labtf.maps import pearson_r

    p = np.array([r["probs"] for r in page_results], np.float64)
    agree = float((p.argmax(1) == probs.argmax(1)).mean())
    rs = []
    for r, ref in zip(page_results, cams):
        cam = np.asarray(r["cam"], np.float64).reshape(r["camShape"])
        value = pearson_r(cam, ref)
        if not np.isnan(value):
            rs.append(value)
    return {"n": len(p), "top1_agreement": agree, "max_abs_dp": float(np.abs(p - probs).max()),
            "cam_r_min": float(min(rs)) if rs else float("nan"),
            "cam_r_median": float(np.median(rs)) if rs else float("nan"), "cam_n": len(rs),
            "page_ms_median": float(np.median([r["ms"] for r in page_results])),
            "page_prep_ms_median": float(np.median([r["prepMs"] for r in page_results]))}
