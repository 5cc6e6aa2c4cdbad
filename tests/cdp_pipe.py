"""Minimal Chrome DevTools Protocol client over --remote-debugging-pipe (no extra packages)."""
from __future__ import annotations

import json
import os
import select
import subprocess
import time


def _to_3_4(r: int, w: int) -> None:
    """In the child: put the command pipe on fd 3 and the reply pipe on fd 4."""
    r2, w2 = os.dup(r), os.dup(w)  # high numbers first, so 3/4 may be overwritten safely
    os.dup2(r2, 3, inheritable=True)
    os.dup2(w2, 4, inheritable=True)


class Chromium:
    """Headless chromium driven through fd 3 (commands) and fd 4 (replies/events)."""

    def __init__(self, binary: str, download_dir: str):
        r_cmd, self._w = os.pipe()      # we write commands -> chromium reads fd 3
        self._r, w_out = os.pipe()      # chromium writes fd 4 -> we read
        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-dev-shm-usage", "--remote-debugging-pipe", f"--user-data-dir={download_dir}/profile",
             "about:blank"],
            pass_fds=(3, 4), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=lambda: _to_3_4(r_cmd, w_out))
        os.close(r_cmd)
        os.close(w_out)
        self._id = 0
        self._buf = b""
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 20.0) -> dict:
        """Send a command and wait (bounded) for its reply."""
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
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
