"""A minimal headless-Chromium driver over the Chrome DevTools Protocol (aiohttp websocket).

Used by the serving page test: open a URL, evaluate JavaScript, set a file input
(a real upload: the page's change handler runs). Loopback only; every wait is
bounded in time.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--remote-debugging-address=127.0.0.1",
         "--remote-debugging-port=0"]


def chromium_path() -> str | None:
    """The Chromium binary, or None."""
    for exe in ("/usr/bin/chromium", shutil.which("chromium") or "", shutil.which("chromium-browser") or ""):
        if exe and os.access(exe, os.X_OK):
            return exe
    return None


class Chromium:
    """``with Chromium(exe, url, profile) as page: page.eval(...)``."""

    def __init__(self, exe: str, url: str, profile: Path, timeout: float = 30.0) -> None:
        self.exe, self.url, self.profile, self.timeout = exe, url, Path(profile), timeout
        self.loop = asyncio.new_event_loop()
        self.proc = None
        self._id = 0

    def __enter__(self) -> "Chromium":
        self.profile.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([self.exe, *FLAGS, f"--user-data-dir={self.profile}", self.url],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file, t0 = self.profile / "DevToolsActivePort", time.monotonic()
        while not (port_file.is_file() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() - t0 > self.timeout:
                self.__exit__(None, None, None)
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        self.loop.run_until_complete(self._connect(port))
        return self

    async def _connect(self, port: int) -> None:
        import aiohttp

        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        t0 = time.monotonic()
        while True:
            async with self.session.get(f"http://127.0.0.1:{port}/json/list") as r:
                pages = [t for t in await r.json() if t.get("type") == "page"]
            if pages or time.monotonic() - t0 > self.timeout:
                break
            await asyncio.sleep(0.2)
        self.ws = await self.session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0)

    async def _send(self, method: str, params: dict | None = None) -> dict:
        self._id += 1
        await self.ws.send_str(json.dumps({"id": self._id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            msg = await self.ws.receive(timeout=self.timeout)
            data = json.loads(msg.data)
            if data.get("id") == self._id:
                if "error" in data:
                    raise RuntimeError(f"{method}: {data['error']}")
                return data["result"]
        raise TimeoutError(method)

    def call(self, method: str, params: dict | None = None) -> dict:
        """One CDP command."""
        return self.loop.run_until_complete(self._send(method, params))

    def eval(self, expression: str):
        """Evaluate JavaScript in the page; its value (JSON-able)."""
        res = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                             "awaitPromise": True})
        if "exceptionDetails" in res:
            raise RuntimeError(res["exceptionDetails"].get("text", "JS exception"))
        return res["result"].get("value")

    def wait_for(self, condition: str, timeout: float) -> bool:
        """Poll a JavaScript condition until true (False after ``timeout`` s)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.eval(f"!!({condition})"):
                return True
            time.sleep(0.1)
        return False

    def upload(self, selector: str, path: Path) -> None:
        """Choose ``path`` in the file input ``selector`` (fires its change event)."""
        root = self.call("DOM.getDocument")["root"]["nodeId"]
        node = self.call("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
        self.call("DOM.setFileInputFiles", {"files": [str(Path(path).resolve())], "nodeId": node})

    def screenshot(self, path: Path) -> Path:
        """PNG of the viewport."""
        import base64

        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)

    def __exit__(self, *exc) -> None:
        async def close():
            if getattr(self, "ws", None) is not None:
                await self.ws.close()
            if getattr(self, "session", None) is not None:
                await self.session.close()
        try:
            self.loop.run_until_complete(close())
        finally:
            self.loop.close()
            if self.proc is not None and self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
