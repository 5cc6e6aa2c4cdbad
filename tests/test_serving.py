"""Serving: TF Serving repository + REST contract, the edge server, the client (loopback only)."""
from __future__ import annotations

import asyncio
import base64
import http.client
import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("aiohttp")

from exporters import export  # noqa: E402
from labtf.serving.client import Client, ServingError  # noqa: E402
from labtf.serving.protocol import format_predict, labtf_signatures, parse_predict  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def exported(trained_run, trained_tflite, tmp_path_factory):
    """fp32 .tflite and a TF Serving repository (SavedModel 'tiny' v3, batching file)."""
    out = tmp_path_factory.mktemp("serving")
    tfl = trained_tflite
    sm = export(trained_run.path, "saved_model", out / "repo", name="tiny", version=3, batching=True)
    return {"tflite": tfl, "saved_model": sm, "base": out / "repo", "tmp": out}


@pytest.fixture(scope="module")
def images(shared_data):
    """Six PNG/JPEG files of the shared dataset."""
    return sorted(shared_data.rglob("*.*"))[:6]


class Proc:
    """A ``labtf serve`` subprocess."""

    def __init__(self, artifact: Path, log: Path, *args: str) -> None:
        self.log = log
        self.stderr = open(log.with_suffix(".err"), "wb")
        self.p = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "serve", str(artifact),
                                   "--port", "0", "--access-log", str(log), *args],
                                  stdout=subprocess.PIPE, stderr=self.stderr, cwd=ROOT)
        line, t0 = b"", time.monotonic()
        while b"serving on" not in line:
            if self.p.poll() is not None or time.monotonic() - t0 > 90:
                self.stop()
                pytest.fail(f"server did not start: {log.with_suffix('.err').read_text()[-2000:]}")
            line = self.p.stdout.readline()
        self.url = line.decode().split("serving on ")[1].split("/")[0:3]
        self.url = "/".join(self.url)
        self.port = int(self.url.rsplit(":", 1)[1])

    def stop(self) -> int | None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(30)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(10)
        self.stderr.close()
        return self.p.returncode


@pytest.fixture(scope="module")
def server(exported):
    """The fp32 .tflite behind ``labtf serve`` (2 workers, 1 MB body limit, micro-batching)."""
    proc = Proc(exported["tflite"], exported["tmp"] / "access.log", "--workers", "2",
                "--max-body-mb", "1", "--timeout-s", "20", "--batch-ms", "2", "--name", "tiny")
    yield proc
    proc.stop()


def _post(port: int, path: str, body: bytes, method: str = "POST") -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def _b64(path: Path) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode()


def test_repository_and_tf_serving_rest_contract(exported, images, trained_run):
    import tensorflow as tf

    base, folder = exported["base"], exported["saved_model"]
    assert folder == base / "tiny" / "3" and (folder / "saved_model.pb").is_file()
    config = (base / "models.config").read_text()
    assert 'name: "tiny"' in config and f'base_path: "{base.resolve() / "tiny"}"' in config
    assert 'model_platform: "tensorflow"' in config and "model_version_policy { all {} }" in config
    assert "max_batch_size { value: 16 }" in (base / "batching.config").read_text()
    serving_md = (base / "SERVING.md").read_text()
    assert f"--model_config_file={base.resolve() / 'models.config'}" in serving_md
    assert "tensorflow/serving" in serving_md and "--batching_parameters_file" in serving_md

    loaded = tf.saved_model.load(str(folder))
    assert {"serving_default", "serving_pixels"} <= set(loaded.signatures)
    sig = loaded.signatures["serving_default"]
    n_cls = len(trained_run.classes)
    cam_hw = tuple(sig.structured_outputs["cam"].shape[1:])
    expect = labtf_signatures(64, n_cls, cam_hw)   # what the edge server's /metadata reports
    for name, (ins, outs) in expect.items():
        s = loaded.signatures[name]
        got_in = s.structured_input_signature[1]
        assert set(got_in) == set(ins)
        for key, info in ins.items():
            assert got_in[key].dtype.name == info.dtype
            assert tuple(-1 if d is None else d for d in got_in[key].shape) == info.shape
        assert set(s.structured_outputs) == set(outs)
        for key, info in outs.items():
            spec = s.structured_outputs[key]
            assert spec.dtype.name == info.dtype
            assert tuple(-1 if d is None else d for d in spec.shape) == info.shape
    if shutil.which("saved_model_cli"):
        shown = subprocess.run(["saved_model_cli", "show", "--dir", str(folder), "--all"],
                               capture_output=True, text=True, timeout=120).stdout
        assert "signature_def['serving_default']" in shown
        assert "inputs['image_bytes'] tensor_info:\n        dtype: DT_STRING\n        shape: (-1)" in shown
        assert "outputs['probabilities'] tensor_info:\n        dtype: DT_FLOAT\n" \
               f"        shape: (-1, {n_cls})" in shown
        assert "outputs['label'] tensor_info:\n        dtype: DT_STRING" in shown

    # inputs built exactly as TF Serving builds them from the row and columnar JSON
    row = json.loads(json.dumps({"instances": [{"image_bytes": {"b64": _b64(f)}} for f in images]}))
    col = json.loads(json.dumps({"inputs": {"image_bytes": [{"b64": _b64(f)} for f in images]}}))
    answers = {}
    for body in (row, col):
        name, arrays, fmt = parse_predict(body, expect)
        assert name == "serving_default" and arrays["image_bytes"].shape == (len(images),)
        assert arrays["image_bytes"][0] == images[0].read_bytes()
        out = sig(**{k: tf.constant(list(v), tf.string) for k, v in arrays.items()})
        answers[fmt] = json.loads(json.dumps(format_predict({k: v.numpy() for k, v in out.items()},
                                                            fmt)))
    preds = answers["row"]["predictions"]
    assert len(preds) == len(images) and set(preds[0]) == {"probabilities", "class_index",
                                                           "label", "cam"}
    assert preds[0]["label"] in trained_run.classes and len(preds[0]["probabilities"]) == n_cls
    assert np.shape(preds[0]["cam"]) == cam_hw
    outs = answers["columnar"]["outputs"]
    assert outs["label"] == [p["label"] for p in preds]
    assert np.allclose(outs["probabilities"], [p["probabilities"] for p in preds])


def test_round_trip_equals_in_process_predict(server, exported, images):
    from labtf.predict import open_predictor, predict_files

    local = predict_files(open_predictor(exported["tflite"]), [str(f) for f in images],
                          top_k=3, with_cam=True)
    client = Client(server.url, "tiny", version=1, timeout=20)
    served = client.predict(images)
    assert len(served) == len(images)
    pred = open_predictor(exported["tflite"])
    for s, r in zip(served, local):
        probs = {label: p for label, p in r.top}
        assert s.label == r.label
        for j, c in enumerate(pred.classes):
            assert abs(s.probabilities[j] - probs[c]) < 1e-5
        assert np.abs(s.cam - r.cam).max() < 1e-5
    assert client.status()["model_version_status"][0]["state"] == "AVAILABLE"
    meta = client.metadata()
    assert set(meta["metadata"]["signature_def"]["signature_def"]) == {"serving_default",
                                                                       "serving_pixels"}
    assert client.classes == pred.classes and client.image_size == 64
    # the pixel signature (columnar) gives the same numbers
    x = np.stack([np.asarray(v, np.float32) for v in [np.full((64, 64, 3), 90.0)]])
    ans = client.predict_raw({"signature_name": "serving_pixels", "inputs": {"image": x.tolist()}})
    assert np.abs(np.array(ans["outputs"]["probabilities"]) - pred.predict_batch(x)).max() < 1e-5
    client.close()


BAD = [
    ("malformed JSON", "POST", "/v1/models/tiny:predict", b'{"instances": [', 400, "JSON Parse error"),
    ("invalid base64", "POST", "/v1/models/tiny:predict",
     b'{"instances": [{"image_bytes": {"b64": "%%%not base64"}}]}', 400, "invalid base64"),
    ("not an image", "POST", "/v1/models/tiny:predict",
     json.dumps({"instances": [{"image_bytes": {"b64": base64.b64encode(b"hello").decode()}}]}).encode(),
     400, "not an image"),
    ("no instances", "POST", "/v1/models/tiny:predict", b'{"foo": 1}', 400, "exactly one of"),
    ("wrong input name", "POST", "/v1/models/tiny:predict", b'{"inputs": {"x": []}}', 400, "expected keys"),
    ("unknown signature", "POST", "/v1/models/tiny:predict",
     b'{"signature_name": "nope", "instances": ["a"]}', 400, "not found"),
    ("oversized body", "POST", "/v1/models/tiny:predict", b"x" * 1_500_000, 413, "limit"),
    ("unknown model", "POST", "/v1/models/nope:predict", b"{}", 404, "Servable not found"),
    ("unknown version", "GET", "/v1/models/tiny/versions/7", None, 404, "Specific(tiny, 7)"),
    ("bad version", "GET", "/v1/models/tiny/versions/x", None, 400, "version"),
    ("wrong method", "GET", "/v1/models/tiny:predict", None, 405, "use POST"),
    ("wrong method 2", "DELETE", "/v1/models/tiny", None, 405, "use GET"),
    ("unknown path", "GET", "/nothing/here", None, 404, "no such path"),
]


def test_bad_requests_get_4xx_and_the_server_keeps_serving(server, images):
    for what, method, path, body, status, text in BAD:
        code, answer = _post(server.port, path, body, method)
        assert code == status, (what, code, answer)
        assert isinstance(answer.get("error"), str) and text in answer["error"], (what, answer)
        assert "\n" not in answer["error"]
    assert Client(server.url, "tiny").predict([images[0]])[0].label
    # the same failures through the client are one-line ServingErrors
    with pytest.raises(ServingError, match="HTTP 404: Servable not found"):
        Client(server.url, "nope").status()
    with pytest.raises(ServingError, match="HTTP 400: instances\\[0\\].image_bytes: not an image"):
        Client(server.url, "tiny").predict([b"GIF89a broken"])


def test_client_connection_errors(tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    with pytest.raises(ServingError, match="connection refused"):
        Client(f"http://127.0.0.1:{port}", "m").status()
    sock.listen(1)   # accepts, never answers
    try:
        with pytest.raises(ServingError, match="no answer .* within 0.5 s"):
            Client(f"127.0.0.1:{port}", "m", timeout=0.5).status()
    finally:
        sock.close()
    with pytest.raises(ServingError, match="not http"):
        Client("ftp://x", "m")


def test_cli_predict_through_the_server(server, images, tmp_path):
    from click.testing import CliRunner

    from cli import main

    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    res = CliRunner().invoke(main, ["predict", "--server", server.url, "--model", "tiny",
                                    str(images[0]), str(images[1]), str(bad), "--top-k", "2",
                                    "--saliency", str(tmp_path / "cam")])
    assert res.exit_code == 1, res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith(str(images[0].parent.parent))]
    assert len(lines) == 2 and lines[0].count('": ') == 2
    assert "notes.txt: rejected by the server (HTTP 400: " in res.output and "1 of 3 image(s)" in res.output
    assert len(list((tmp_path / "cam").glob("*_cam.png"))) == 2
    res = CliRunner().invoke(main, ["predict", "--server", "http://127.0.0.1:1", "--model", "x",
                                    str(images[0])])
    assert res.exit_code == 2 and "connection refused" in res.output


def test_bounded_load_has_no_errors(server, images):
    blobs = [f.read_bytes() for f in images]
    errors, latencies = [], []

    def worker(k: int) -> None:
        client = Client(server.url, "tiny", timeout=20)
        for i in range(50):
            t = time.perf_counter()
            try:
                client.predict([blobs[(k + i) % len(blobs)]])
                latencies.append(time.perf_counter() - t)
            except Exception as exc:  # noqa: BLE001
                errors.append(repr(exc))
        client.close()

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(8)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    assert errors == [] and len(latencies) == 400
    print(f"load: 400 requests in {time.perf_counter() - t0:.1f} s, "
          f"p50 {1000 * np.median(latencies):.1f} ms")


def test_saved_model_artifact_in_thread(exported, images):
    """The SavedModel behind the edge server (in-thread, port 0) equals in-process predict."""
    from labtf.predict import open_predictor, predict_files
    from labtf.serving.engine import EdgeModel
    from labtf.serving.server import run

    model = EdgeModel(exported["base"], workers=1)
    assert (model.name, model.version) == ("tiny", 3)
    started, stop = threading.Event(), {}

    def main() -> None:
        async def go():
            stop["event"], stop["loop"] = asyncio.Event(), asyncio.get_running_loop()
            await run(model, port=0, ready=lambda url: (stop.update(url=url), started.set()),
                      stop=stop["event"])
        asyncio.run(go())

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    assert started.wait(60)
    try:
        served = Client(stop["url"], "tiny", version=3).predict(images[:3])
        local = predict_files(open_predictor(exported["saved_model"]), [str(f) for f in images[:3]],
                              top_k=3)
        for s, r in zip(served, local):
            assert s.label == r.label and abs(s.confidence - r.confidence) < 1e-5
        with pytest.raises(ServingError, match="Specific\\(tiny, 1\\)"):
            Client(stop["url"], "tiny", version=1).status()
    finally:
        stop["loop"].call_soon_threadsafe(stop["event"].set)
        thread.join(30)
    assert not thread.is_alive()


def test_page_in_headless_chromium(server, images, exported, tmp_path):
    from cdp import Browser, chromium_path

    exe = chromium_path()
    if exe is None:
        pytest.skip("chromium is not installed (/usr/bin/chromium)")
    from labtf.predict import open_predictor, predict_files

    expected = predict_files(open_predictor(exported["tflite"]), [str(images[0])])[0]
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    with Browser(exe, tmp_path / "profile") as browser:
        page = browser.open(f"{server.url}/")
        assert page.wait_for("document.body.dataset.state === 'ready'", 30)
        page.upload("#file", images[0])
        assert page.wait_for("['done', 'error'].includes(document.body.dataset.state)", 30)
        assert page.eval("document.getElementById('error').textContent") == ""
        assert page.eval("document.getElementById('label').textContent") == expected.label
        assert page.eval("document.getElementById('confidence').textContent") == \
            f"{100 * expected.confidence:.1f}%"
        # the heat map was drawn: the canvas is neither blank nor plain white
        colours = page.eval("""(() => { const d = document.getElementById('view').getContext('2d')
            .getImageData(0, 0, 320, 320).data; const s = new Set();
            for (let i = 0; i < d.length; i += 97) s.add(d[i] + ',' + d[i+1] + ',' + d[i+2]);
            return s.size; })()""")
        assert colours > 20
        page.upload("#file", bad)
        assert page.wait_for("document.body.dataset.state === 'error'", 30)
        assert "not an image" in page.eval("document.getElementById('error').textContent")


def test_sigterm_drains_in_flight_requests(exported, images, tmp_path):
    """SIGTERM: a request already being received is answered, then the process exits 0."""
    proc = Proc(exported["tflite"], tmp_path / "access.log", "--name", "tiny")
    body = json.dumps({"instances": [{"image_bytes": {"b64": _b64(images[0])}}]}).encode()
    sock = socket.create_connection(("127.0.0.1", proc.port), timeout=20)
    try:
        sock.sendall(b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
        sock.sendall(body[:100])
        time.sleep(0.5)
        proc.p.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        sock.sendall(body[100:])
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < 50:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert proc.p.wait(30) == 0
    proc.stop()
    assert "stopped" in (tmp_path / "access.err").read_text()
    records = [json.loads(line) for line in (tmp_path / "access.log").read_text().splitlines()]
    assert records[-1]["status"] == 200 and records[-1]["instances"] == 1
    assert {"ts", "remote", "method", "path", "status", "ms"} <= set(records[-1])
    with pytest.raises(ServingError, match="connection refused"):
        Client(f"http://127.0.0.1:{proc.port}", "tiny").status()


def test_grpc_is_optional_and_export_options_are_checked(trained_run, tmp_path):
    from click.testing import CliRunner

    from cli import main
    from labtf.errors import LabtfError
    from labtf.serving.client import grpc_predict

    try:
        import tensorflow_serving  # noqa: F401
    except ImportError:
        with pytest.raises(LabtfError, match="pip install tensorflow-serving-api"):
            grpc_predict("127.0.0.1:8500", "tiny", [b"x"])
    res = CliRunner().invoke(main, ["export", str(trained_run.path), "--format", "tflite",
                                    "--serving-base", str(tmp_path)])
    assert res.exit_code == 2 and "--serving-base is for --format saved_model" in res.output
    res = CliRunner().invoke(main, ["export", str(trained_run.path), "--format", "saved_model"])
    assert res.exit_code == 2 and "pass --out DIR" in res.output
