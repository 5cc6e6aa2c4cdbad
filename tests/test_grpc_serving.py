"""labtf serve against TF Serving's own clients: gRPC stubs, :classify, labels, Prometheus."""
from __future__ import annotations

import base64
import http.client
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("aiohttp")
pytest.importorskip("prometheus_client")
grpc = pytest.importorskip("grpc")
pytest.importorskip("tensorflow_serving.apis",
                    reason="tensorflow-serving-api not installed (pip install --no-deps "
                           "tensorflow-serving-api)")

from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,  # noqa: E402
                                     get_model_status_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from labtf.serving.client import Client, ServingError, grpc_predict  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def server(trained_tflite, tmp_path_factory):
    """fp32 .tflite behind ``labtf serve --grpc-port 0`` (2 workers, 1 MB limit, label stable)."""
    out = tmp_path_factory.mktemp("grpc")
    artifact = trained_tflite
    err = open(out / "serve.err", "wb")
    p = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "serve", str(artifact),
                          "--port", "0", "--grpc-port", "0", "--name", "tiny", "--workers", "2",
                          "--max-body-mb", "1", "--version-label", "stable",
                          "--access-log", ""], stdout=subprocess.PIPE, stderr=err, cwd=ROOT)
    lines, t0 = [], time.monotonic()
    while len(lines) < 2:
        if p.poll() is not None or time.monotonic() - t0 > 600:
            p.kill()
            pytest.fail(f"server did not start: {(out / 'serve.err').read_text()[-2000:]}")
        line = p.stdout.readline().decode()
        if line.startswith(("serving on", "gRPC on")):
            lines.append(line.split()[2])
    rest, target = lines[0].rstrip("/"), lines[1]
    channel = grpc.insecure_channel(target)
    yield {"rest": rest, "port": int(rest.rsplit(":", 1)[1]), "target": target,
           "pred": prediction_service_pb2_grpc.PredictionServiceStub(channel),
           "models": model_service_pb2_grpc.ModelServiceStub(channel), "proc": p}
    channel.close()
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()
    err.close()


@pytest.fixture(scope="module")
def blobs(shared_data):
    return [f.read_bytes() for f in sorted(shared_data.rglob("*.*"))[:4]]


def _rest(port: int, path: str, body: dict | None = None) -> tuple[int, dict | str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST" if body is not None else "GET", path,
                     body=json.dumps(body) if body is not None else None)
        resp = conn.getresponse()
        raw = resp.read().decode()
        return resp.status, (json.loads(raw) if raw.startswith("{") else raw)
    finally:
        conn.close()


def _predict_request(blobs, name="tiny", signature="", **spec):
    import tensorflow as tf

    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    req.model_spec.signature_name = signature
    for k, v in spec.items():
        if k == "version":
            req.model_spec.version.value = v
        else:
            setattr(req.model_spec, k, v)
    req.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(blobs, dtype=tf.string))
    return req


def test_official_stubs_answer_like_rest(server, blobs, trained_run):
    import tensorflow as tf
    from google.protobuf import json_format

    resp = server["pred"].Predict(_predict_request(blobs), 30)
    assert resp.model_spec.name == "tiny" and resp.model_spec.version.value == 1
    out = {k: tf.make_ndarray(v) for k, v in resp.outputs.items()}
    assert set(out) == {"probabilities", "class_index", "label", "cam"}
    b64 = [{"image_bytes": {"b64": base64.b64encode(b).decode()}} for b in blobs]
    status, rest = _rest(server["port"], "/v1/models/tiny:predict", {"instances": b64})
    assert status == 200
    probs = np.array([r["probabilities"] for r in rest["predictions"]])
    assert np.abs(out["probabilities"] - probs).max() <= 1e-6
    assert np.abs(out["cam"] - np.array([r["cam"] for r in rest["predictions"]])).max() <= 1e-6
    assert [x.decode() for x in out["label"]] == [r["label"] for r in rest["predictions"]]
    assert list(out["class_index"]) == [r["class_index"] for r in rest["predictions"]]

    creq = classification_pb2.ClassificationRequest()
    creq.model_spec.name = "tiny"
    for b in blobs:
        creq.input.example_list.examples.add().features.feature[
            "image/encoded"].bytes_list.value.append(b)
    cls = server["pred"].Classify(creq, 30).result.classifications
    status, rest_cls = _rest(server["port"], "/v1/models/tiny:classify", {"examples": b64})
    assert status == 200 and len(rest_cls["results"]) == len(blobs)
    for row, rrow, p in zip(cls, rest_cls["results"], probs):
        assert [c.label for c in row.classes] == [r[0] for r in rrow] == trained_run.classes
        np.testing.assert_allclose([c.score for c in row.classes], p, atol=1e-6)
        np.testing.assert_allclose([r[1] for r in rrow], p, atol=1e-6)

    mreq = get_model_metadata_pb2.GetModelMetadataRequest()
    mreq.model_spec.name = "tiny"
    mreq.metadata_field.append("signature_def")
    sdm = get_model_metadata_pb2.SignatureDefMap()
    server["pred"].GetModelMetadata(mreq, 30).metadata["signature_def"].Unpack(sdm)
    _, rest_meta = _rest(server["port"], "/v1/models/tiny/metadata")

    def no_empty(d):
        """Signatures, inputs, outputs, dtypes and dims; protobuf's JSON leaves out empty maps
        and false flags (REST writes "defaults": {}, "unknown_rank": false), and the graph's
        internal tensor names are not part of the contract; int64s are JSON strings there."""
        if isinstance(d, list):
            return [no_empty(v) for v in d]
        if isinstance(d, str) and d.lstrip("-").isdigit():
            return int(d)
        if not isinstance(d, dict):
            return d
        return {k: no_empty(v) for k, v in d.items()
                if v != {} and v is not False and k != "name"}

    assert no_empty(json_format.MessageToDict(sdm, preserving_proto_field_name=True)) == \
        no_empty(rest_meta["metadata"]["signature_def"])

    sreq = get_model_status_pb2.GetModelStatusRequest()
    sreq.model_spec.name = "tiny"
    (st,) = server["models"].GetModelStatus(sreq, 30).model_version_status
    assert st.version == 1 and st.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE


@pytest.mark.parametrize("case,code,message", [
    ({"name": "other"}, "NOT_FOUND", "Latest(other)"),
    ({"version": 7}, "NOT_FOUND", "served version: 1"),
    ({"version_label": "canary"}, "NOT_FOUND", "labels: stable"),
    ({"signature": "nope"}, "INVALID_ARGUMENT", "available: serving_default, serving_pixels"),
    ({"bad_image": True}, "INVALID_ARGUMENT", "not an image"),
    ({"float_input": True}, "INVALID_ARGUMENT", "expects DT_STRING, got DT_FLOAT"),
    ({"too_big": True}, "RESOURCE_EXHAUSTED", ""),
])
def test_errors_are_grpc_status_codes(server, blobs, case, code, message):
    import tensorflow as tf

    case = dict(case)
    data = [b"not an image"] if case.pop("bad_image", False) else blobs[:1]
    if case.pop("too_big", False):
        data = [b"x" * 1_100_000]
    float_input = case.pop("float_input", False)
    req = _predict_request(data, **case)
    if float_input:
        req.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(np.zeros(1, np.float32)))
    with pytest.raises(grpc.RpcError) as err:
        server["pred"].Predict(req, 30)
    assert err.value.code().name == code
    assert message in (err.value.details() or "")
    ok = server["pred"].Predict(_predict_request(blobs[:1], version_label="stable"), 30)
    assert ok.outputs["probabilities"].tensor_shape.dim[0].size == 1


def test_client_grpc_mode_equals_rest(server, shared_data, tmp_path):
    files = sorted(shared_data.rglob("*.*"))[:5]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    via_grpc = Client(f"grpc://{server['target']}", "tiny")
    via_rest = Client(server["rest"], "tiny")
    assert via_grpc.classes == via_rest.classes and via_grpc.image_size == via_rest.image_size
    assert via_grpc.status()["model_version_status"][0]["state"] == "AVAILABLE"
    g = via_grpc.predict_files(files + [bad], top_k=3, with_cam=True)
    r = via_rest.predict_files(files + [bad], top_k=3, with_cam=True)
    for a, b in zip(g[:-1], r[:-1]):
        assert [n for n, _ in a.top] == [n for n, _ in b.top]
        np.testing.assert_allclose([p for _, p in a.top], [p for _, p in b.top], atol=1e-6)
        np.testing.assert_allclose(a.cam, b.cam, atol=1e-6)
    assert "rejected by the server (HTTP 400" in g[-1].error and "not an image" in g[-1].error
    gc, rc = via_grpc.classify(files[:2]), via_rest.classify(files[:2])
    assert [[label for label, _ in row] for row in gc] == [[label for label, _ in row] for row in rc]
    np.testing.assert_allclose([[p for _, p in row] for row in gc], [[p for _, p in row] for row in rc],
                               atol=1e-6)
    out = grpc_predict(server["target"], "tiny", [files[0].read_bytes()])
    assert out["label"][0].decode() == g[0].top[0][0]
    with pytest.raises(ServingError, match="NOT_FOUND: Servable not found"):
        Client(f"grpc://{server['target']}", "nope").predict(files[:1])
    with pytest.raises(ServingError, match="cannot reach grpc://127.0.0.1:1"):
        Client("grpc://127.0.0.1:1", "tiny", timeout=5).predict(files[:1])


def test_rest_labels_health_classify_errors_and_metrics(server, blobs):
    from prometheus_client.parser import text_string_to_metric_families

    def counts() -> dict:
        status, text = _rest(server["port"], "/monitoring/prometheus/metrics")
        assert status == 200
        out = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.name == "labtf_requests_total":
                    key = (s.labels["api"], s.labels["endpoint"], s.labels["code"])
                    out[key] = s.value
                if s.name == "labtf_model_state" and s.labels["state"] == "AVAILABLE":
                    out["available"] = s.value
        return out

    before = counts()
    b64 = [{"image_bytes": {"b64": base64.b64encode(blobs[0]).decode()}}]
    assert _rest(server["port"], "/v1/models/tiny/labels/stable:predict",
                 {"instances": b64})[0] == 200
    status, body = _rest(server["port"], "/v1/models/tiny/labels/canary:predict",
                         {"instances": b64})
    assert status == 404 and "Unrecognized servable version label: canary" in body["error"]
    status, body = _rest(server["port"], "/v1/models/tiny:classify", {"examples": [{"x": 1}]})
    assert status == 400 and "expected one image feature" in body["error"]
    status, body = _rest(server["port"], "/healthz")
    assert status == 200 and body["status"] == "ok"
    for _ in range(3):
        server["pred"].Predict(_predict_request(blobs[:1]), 30)
    after = counts()

    def delta(key):
        return after.get(key, 0) - before.get(key, 0)

    assert delta(("rest", "predict", "200")) == 1 and delta(("rest", "predict", "404")) == 1
    assert delta(("rest", "classify", "400")) == 1 and delta(("rest", "healthz", "200")) == 1
    assert delta(("grpc", "predict", "OK")) == 3 and after["available"] == 1.0
