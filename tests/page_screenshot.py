"""Full-page PNG of an HTML file in headless Chromium at a given width (for docs/*.png).

    python tests/page_screenshot.py runs/demo/report.html docs/report_page.png --width 1280

Standard library + tests/cdp.py only. Also prints the page's scroll width, so a page
wider than the window (a table overflowing) shows up as a number, not only in the picture.
"""
from __future__ import annotations

import argparse
import base64
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cdp import Browser, chromium_path  # noqa: E402


def screenshot(page_file: Path, out: Path, width: int = 1280) -> dict:
    """Write a full-page PNG of ``page_file``; returns the page's widths and height."""
    import subprocess

    exe = chromium_path()
    if exe is None:
        raise SystemExit("chromium is not installed (apt-get install -y chromium)")
    dims: dict = {}
    try:
        with tempfile.TemporaryDirectory() as profile, Browser(exe, profile) as browser:
            dims.update(_shoot(browser, page_file, out, width))
    except subprocess.TimeoutExpired:       # a slow browser exit on a loaded machine
        if not dims:
            raise
    return dims


def _shoot(browser: Browser, page_file: Path, out: Path, width: int) -> dict:
    page = browser.open(page_file.resolve().as_uri())
    page.send("Emulation.setDeviceMetricsOverride",
              {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False})
    if not page.wait_for("document.readyState === 'complete'", 60):
        raise SystemExit(f"{page_file} did not finish loading")
    dims = json.loads(page.eval(
        "JSON.stringify({scroll_width: document.documentElement.scrollWidth, "
        "view_width: innerWidth, height: document.documentElement.scrollHeight})"))
    shot = page.send("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": width, "height": dims["height"], "scale": 1}})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(base64.b64decode(shot["data"]))
    return dims


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("page", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--width", type=int, default=1280)
    args = ap.parse_args()
    dims = screenshot(args.page, args.out, args.width)
    print(f"{args.out}: {args.width} px wide window, page scroll width {dims['scroll_width']} px, "
          f"height {dims['height']} px")


if __name__ == "__main__":
    main()
