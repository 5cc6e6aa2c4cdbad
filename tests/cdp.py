"""Headless Chromium over the Chrome DevTools Protocol, through --remote-debugging-pipe.

Standard library only. Used by the browser tests (the serving page, the review page):
open a page, evaluate JavaScript, wait for a condition, set a file input (a real upload:
the page's change handler runs), send input events, let downloads land in a folder.
Every wait is bounded in time.

    with Browser(chromium_path(), tmp_path / "profile", downloads=tmp_path) as browser:
        page = browser.open(url)
        assert page.wait_for("document.readyState === 'complete'", 10)
"""
from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--remote-debugging-pipe"]


def chromium_path() -> str | None:
    """The Chromium binary, or None."""
    for exe in ("/usr/bin/chromium", shutil.which("chromium") or "", shutil.which("chromium-browser") or ""):
        if exe and os.access(exe, os.X_OK):
            return exe
    return None


def _to_3_4(r: int, w: int) -> None:
    """In the child: put the command pipe on fd 3 and the reply pipe on fd 4."""
    r2, w2 = os.dup(r), os.dup(w)  # high numbers first, so 3/4 may be overwritten safely
    os.dup2(r2, 3, inheritable=True)
    os.dup2(w2, 4, inheritable=True)


class Browser:
    """Headless chromium driven through fd 3 (commands) and fd 4 (replies and events)."""

    def __init__(self, binary: str, profile: str | Path, downloads: str | Path | None = None,
                 timeout: float = 20.0):
        self.timeout = timeout
        Path(profile).mkdir(parents=True, exist_ok=True)
        r_cmd, self._w = os.pipe()      # we write commands -> chromium reads fd 3
        self._r, w_out = os.pipe()      # chromium writes fd 4 -> we read
        self.proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            pass_fds=(3, 4), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=lambda: _to_3_4(r_cmd, w_out))
        os.close(r_cmd)
        os.close(w_out)
        self._id = 0
        self._buf = b""
        self.events: list[dict] = []
        if downloads is not None:
            self.send("Browser.setDownloadBehavior", {"behavior": "allow",
                                                      "downloadPath": str(Path(downloads).resolve())})

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float | None = None) -> dict:
        """Send a command and wait (bounded) for its reply."""
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + (timeout or self.timeout)
        while time.monotonic() < deadline:
            for m in self._read(deadline - time.monotonic()):
                if m.get("id") == self._id:
                    if "error" in m:
                        raise RuntimeError(f"{method}: {m['error']}")
                    return m.get("result", {})
                self.events.append(m)
        raise TimeoutError(f"no reply to {method}")

    def _read(self, timeout: float) -> list[dict]:
        ready, _, _ = select.select([self._r], [], [], max(0.0, timeout))
        if not ready:
            return []
        chunk = os.read(self._r, 1 << 20)
        if not chunk:
            raise RuntimeError("chromium closed the pipe")
        self._buf += chunk
        *msgs, self._buf = self._buf.split(b"\0")
        return [json.loads(m) for m in msgs if m]

    def open(self, url: str) -> "Page":
        """A new tab at ``url``, attached (flat session) with the Runtime domain enabled."""
        target = self.send("Target.createTarget", {"url": url})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        page.send("Runtime.enable")
        return page

    def close(self) -> None:
        """Close the browser (bounded wait, then kill)."""
        try:
            self.send("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        os.close(self._w)
        os.close(self._r)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Page:
    """One attached tab."""

    def __init__(self, browser: Browser, session: str):
        self.browser, self.session = browser, session

    def send(self, method: str, params: dict | None = None) -> dict:
        """One CDP command in this tab's session."""
        return self.browser.send(method, params, self.session)

    def eval(self, expression: str):
        """Evaluate JavaScript in the page; its value (JSON-able; promises are awaited)."""
        res = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                             "awaitPromise": True})
        if "exceptionDetails" in res:
            raise RuntimeError(res["exceptionDetails"].get("text", "JS exception"))
        return res["result"].get("value")

    def wait_for(self, condition: str, timeout: float) -> bool:
        """Poll a JavaScript condition until true (False after ``timeout`` s); an exception
        while the page is still loading counts as false."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            try:
                if self.eval(f"!!({condition})"):
                    return True
            except RuntimeError:
                pass
            time.sleep(0.1)
        return False

    def click(self, x: float, y: float) -> None:
        """A left mouse click at viewport coordinates (real input events)."""
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left",
                                                   "clickCount": 1})

    def upload(self, selector: str, path: Path) -> None:
        """Choose ``path`` in the file input ``selector`` (fires its change event)."""
        root = self.send("DOM.getDocument")["root"]["nodeId"]
        node = self.send("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
        self.send("DOM.setFileInputFiles", {"files": [str(Path(path).resolve())], "nodeId": node})
