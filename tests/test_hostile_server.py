"""Hostile inputs against ``labtf serve`` (issue 13), replayed on loopback.

Pixel bombs and floods are refused up front instead of keeping the workers busy,
a full queue answers 503 at once, malformed requests are 4xx with a JSON error,
non-finite pixels are refused, and slow-header connections are closed.
"""
from __future__ import annotations

import base64
import http.client
import io
import json
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("aiohttp")

from test_serving import Proc, _post  # noqa: E402


@pytest.fixture(scope="module")
def tflite(trained_tflite):
    return trained_tflite


@pytest.fixture(scope="module")
def tight(tflite, tmp_path_factory):
    """The issue's server: --timeout-s 2 --max-pending 1 (body limit raised to 64 MB)."""
    proc = Proc(tflite, tmp_path_factory.mktemp("tight") / "access.log", "--timeout-s", "2",
                "--max-pending", "1", "--max-body-mb", "64", "--name", "m")
    yield proc
    proc.stop()


def png(w: int, h: int, mode: str = "1", seed: int = 0) -> bytes:
    if mode == "1":
        img = Image.new("1", (w, h), 0)
        img.paste(1, (w // 4, h // 4, w // 2, h // 2))
    else:
        img = Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def predict_body(blobs: list[bytes]) -> bytes:
    return json.dumps({"instances": [{"image_bytes": {"b64": base64.b64encode(b).decode()}}
                                     for b in blobs]}).encode()


def timed_post(port: int, path: str, body: bytes, timeout: float = 60) -> tuple[int, dict, float, dict]:
    t0 = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        answer = json.loads(resp.read() or b"{}")
        return resp.status, answer, time.monotonic() - t0, dict(resp.getheaders())
    finally:
        conn.close()


CHEAP = predict_body([png(48, 48, "RGB")])


def test_pixel_bomb_is_refused_from_headers_and_ordinary_requests_keep_working(tight):
    """Defect 2: 64 x 6000x6000 1-bit PNGs, four times in a row, then ordinary requests."""
    bomb = predict_body([png(6000, 6000)] * 64)
    for _ in range(4):
        code, answer, took, _ = timed_post(tight.port, "/v1/models/m:predict", bomb)
        assert code == 413 and "MP budget per request" in answer["error"], answer
        assert took < 1.5, took      # refused from the headers, nothing decoded
    code, answer, took, _ = timed_post(tight.port, "/v1/models/m:predict", CHEAP)
    assert code == 200 and answer["predictions"][0]["label"], answer
    assert took < 2.0, took
    # within the budget but far too slow to decode before --timeout-s: refused before any work
    slow = predict_body([png(6000, 6000)] * 2)   # 72 MP, ~5 s of decoding on this CPU
    code, answer, took, _ = timed_post(tight.port, "/v1/models/m:predict", slow)
    assert code in (200, 413), answer
    if code == 413:
        assert "would take about" in answer["error"] and took < 1.5
    code, answer, took, _ = timed_post(tight.port, "/v1/models/m:predict", CHEAP)
    assert code == 200 and took < 2.0, (code, answer, took)


def _with_heavy_request(proc, check) -> None:
    """Run ``check()`` while a large (admitted, seconds-long) request decodes; it must end 200."""
    heavy = predict_body([png(4000, 4000)] * 24)   # 384 MP, small PNGs, seconds of decoding
    result = {}
    first = threading.Thread(target=lambda: result.setdefault(
        "r", timed_post(proc.port, "/v1/models/m:predict", heavy, timeout=120)))
    first.start()
    time.sleep(1.5)
    assert first.is_alive(), result
    check(heavy)
    first.join(120)
    assert result["r"][0] == 200, result["r"][:2]


@pytest.mark.parametrize("max_pending", [1, 4])
def test_a_full_queue_answers_503_at_once_and_heavy_work_has_its_own_lane(tflite, tmp_path, max_pending):
    """While a large request decodes: --max-pending 1 sheds everything else at once (503 +
    Retry-After); with room, another large request gets 503 (one heavy decode at a time) and
    a small one is answered without waiting for the large one."""
    proc = Proc(tflite, tmp_path / "access.log", "--timeout-s", "60", "--max-pending", str(max_pending),
                "--max-body-mb", "64", "--max-request-mp", "400", "--name", "m")

    def check(heavy: bytes) -> None:
        code, answer, took, headers = timed_post(proc.port, "/v1/models/m:predict", heavy)
        assert code == 503 and took < 1.0 and headers.get("Retry-After") == "1", (code, answer, took)
        assert ("--max-pending" if max_pending == 1 else "another large request") in answer["error"]
        code, answer, took, headers = timed_post(proc.port, "/v1/models/m:predict", CHEAP)
        if max_pending == 1:
            assert code == 503 and took < 1.0 and "--max-pending" in answer["error"], (code, answer)
        else:
            assert code == 200 and took < 3.0, (code, answer, took)

    try:
        _with_heavy_request(proc, check)
        code, answer, took, _ = timed_post(proc.port, "/v1/models/m:predict", CHEAP)
        assert code == 200, answer
    finally:
        assert proc.stop() == 0


BAD = [
    ("signature_name a list", "/v1/models/m:predict", b'{"signature_name":["x"],"instances":[1]}', 400,
     "signature_name"),
    ("signature_name an object", "/v1/models/m:predict", b'{"signature_name":{},"instances":[1]}', 400,
     "signature_name"),
    ("empty columnar inputs", "/v1/models/m:predict", b'{"inputs":[]}', 400, "0 examples"),
    ("empty columnar object", "/v1/models/m:predict", b'{"inputs":{"image_bytes":[]}}', 400, "0 examples"),
    ("nested 100k deep", "/v1/models/m:predict", b'{"instances":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
     400, "nested too deeply"),
    ("nested 900 deep", "/v1/models/m:predict", b'{"instances":' + b"[" * 900 + b'"a"' + b"]" * 900 + b"}",
     400, "nested too deeply"),
    ("superscript version", "/v1/models/m/versions/%C2%B2:predict", b'{"instances":[]}', 400,
     "positive integer"),
    ("arabic-indic version", "/v1/models/m/versions/%D9%A3", None, 400, "positive integer"),
    ("NaN literal", "/v1/models/m:predict", b'{"signature_name":"serving_pixels","instances":[NaN]}', 400,
     "NaN"),
]


def test_bad_requests_are_4xx_with_a_json_error(tight, tflite):
    for what, path, body, status, text in BAD:
        code, answer = _post(tight.port, path, body, "POST" if body is not None else "GET")
        assert code == status, (what, code, answer)
        assert text in answer.get("error", ""), (what, answer)
    from labtf.predict import open_predictor

    size = open_predictor(tflite).image_size
    img = np.full((size, size, 3), 100.0)
    for bad_value, text in ((float("nan"), "NaN"), (1e39, "non-finite"), (float("inf"), "Infinity")):
        doc = img.tolist()
        doc[3][4][1] = bad_value
        raw = json.dumps({"signature_name": "serving_pixels",
                          "instances": [img.tolist(), doc]}).encode()   # json writes NaN/Infinity
        code, answer = _post(tight.port, "/v1/models/m:predict", raw)
        assert code == 400 and text in answer["error"], (bad_value, answer)
    raw = json.dumps({"signature_name": "serving_pixels", "instances": [img.tolist()]}).encode()
    code, answer = _post(tight.port, "/v1/models/m:predict", raw)
    assert code == 200 and answer["predictions"][0]["label"]


def test_slow_header_connections_are_closed(tight):
    """200 connections sending their headers one byte at a time are closed after --timeout-s."""
    socks = []
    for _ in range(200):
        s = socket.create_connection(("127.0.0.1", tight.port), timeout=5)
        s.sendall(b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\n")
        socks.append(s)
    t0 = time.monotonic()
    open_ = set(range(len(socks)))
    try:
        while open_ and time.monotonic() - t0 < 8:
            code, _, took, _ = timed_post(tight.port, "/v1/models/m:predict", CHEAP)
            assert code == 200 and took < 2.0     # the server keeps serving meanwhile
            for i in list(open_):
                try:
                    socks[i].sendall(b"X")
                    socks[i].setblocking(False)
                    if socks[i].recv(1) == b"":
                        open_.discard(i)
                except BlockingIOError:
                    pass
                except OSError:      # reset by the server
                    open_.discard(i)
                finally:
                    socks[i].setblocking(True)
            time.sleep(0.3)
        assert not open_, f"{len(open_)} of 200 slow connections still open after 8 s"
        assert time.monotonic() - t0 > 1.0      # not closed before the 2 s timeout
    finally:
        for s in socks:
            s.close()


def test_decode_stops_between_images_at_the_deadline(tflite):
    """Work a timed-out request left in a worker stops before the next image."""
    from labtf.serving.engine import EdgeModel, Expired

    model = EdgeModel(tflite)
    blobs = [png(3000, 3000, seed=i) for i in range(3)] * 10
    t0 = time.monotonic()
    with pytest.raises(Expired, match="abandoned after [1-9]"):
        model.decode(blobs, deadline=time.monotonic() + 0.2)
    one = max(model.scan(blobs[:1]) / model.decode_rate, 0.1)
    assert time.monotonic() - t0 < 0.2 + 4 * one + 1.0
    model.executor.shutdown()
    model.heavy_lane.shutdown()


def test_page_states_before_and_after_a_failed_upload(tight, tmp_path):
    """Walkthrough: nothing but the drop box before an upload; a failed upload clears the
    previous result; the file name is shown. LABTF_SERVE_PAGE_PNG=FILE saves a screenshot."""
    import os

    from cdp import Browser, chromium_path

    exe = chromium_path()
    if exe is None:
        pytest.skip("chromium is not installed (/usr/bin/chromium)")
    clip = sorted((Path(__file__).resolve().parent.parent / "datasets" / "clipart").rglob("*.jpg"))[0]
    good = tmp_path / f"my {clip.name}"
    good.write_bytes(clip.read_bytes())
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    visible = "(id => { const e = document.getElementById(id); return !!(e && e.offsetParent); })"
    with Browser(exe, tmp_path / "profile") as browser:
        page = browser.open(f"{tight.url}/")
        assert page.wait_for("document.body.dataset.state === 'ready'", 30)
        for part in ("out", "view", "confidence", "label", "filename"):
            assert page.eval(f"{visible}('{part}')") is False, part
        assert "confidence" not in page.eval("document.body.innerText")
        page.upload("#file", good)
        assert page.wait_for("document.body.dataset.state === 'done'", 30)
        assert page.eval(f"{visible}('out')") is True and \
            page.eval("document.getElementById('label').textContent")
        assert f"my {clip.name}" in page.eval("document.getElementById('filename').textContent")
        target = os.environ.get("LABTF_SERVE_PAGE_PNG")
        if target:
            page.send("Emulation.setDeviceMetricsOverride", {"width": 900, "height": 640,
                                                             "deviceScaleFactor": 1, "mobile": False})
            shot = page.send("Page.captureScreenshot", {"format": "png"})
            Path(target).write_bytes(base64.b64decode(shot["data"]))
        page.upload("#file", bad)
        assert page.wait_for("document.body.dataset.state === 'error'", 30)
        assert page.eval(f"{visible}('out')") is False
        assert page.eval("document.getElementById('label').textContent") == ""
        assert "notes.txt" in page.eval("document.getElementById('filename').textContent")
        assert "not an image" in page.eval("document.getElementById('error').textContent")
