"""``labtf serve`` with TF Serving's own gRPC stubs beside REST, and its Prometheus counts.

Serves a .tflite with ``labtf serve --grpc-port`` (subprocess, loopback) and checks
with the official ``tensorflow-serving-api`` stubs: Predict, Classify,
GetModelMetadata, GetModelStatus; gRPC answers against REST answers on every test
image (max |dp|, CAM, labels); a load run (CLIENTS threads x REQUESTS, one image
per request) over REST and then over gRPC: req/s, p50/p99, errors; finally one
Prometheus scrape parsed with ``prometheus_client.parser`` whose request counts must
equal the requests this script sent. Writes a Markdown file.

    python benchmarks/grpc_bench.py /work/runs/demo14 --out benchmarks/results/grpc.md
"""
from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def start_server(artifact: Path, workers: int, err: Path):
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "serve", str(artifact),
                             "--port", "0", "--grpc-port", "0", "--workers", str(workers),
                             "--name", "bench", "--access-log", ""],
                            stdout=subprocess.PIPE, stderr=open(err, "wb"), cwd=ROOT)
    found, t0 = {}, time.monotonic()
    while len(found) < 2:
        if proc.poll() is not None or time.monotonic() - t0 > 900:
            proc.kill()
            raise SystemExit(f"server did not start; see {err}")
        line = proc.stdout.readline().decode()
        if line.startswith("serving on"):
            found["rest"] = line.split()[2].rstrip("/")
        elif line.startswith("gRPC on"):
            found["grpc"] = line.split()[2]
    return proc, found["rest"], found["grpc"]


def rest_post(port: int, path: str, body: dict) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", path, body=json.dumps(body))
        resp = conn.getresponse()
        return json.loads(resp.read())
    finally:
        conn.close()


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="run folder")
    ap.add_argument("--artifact", default=None, help=".tflite [RUN_mediapipe/model_fp32.tflite]")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=200, help="per client")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=None, help="Markdown file to write")
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import grpc
    import tensorflow as tf
    from prometheus_client.parser import text_string_to_metric_families
    from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                         get_model_status_pb2, model_service_pb2_grpc,
                                         predict_pb2, prediction_service_pb2_grpc)

    from exporters import export
    from exporters.common import split_samples
    from labtf.run import Run
    from labtf.serving.client import Client, ServingError

    run = Run.open(args.run)
    artifact = Path(args.artifact or f"{Path(args.run).resolve()}_mediapipe/model_fp32.tflite")
    if not artifact.is_file():
        export(args.run, "tflite", artifact.parent, classifier_twin=False)
    blobs = [Path(s.path).read_bytes() for s in split_samples(run, "test")]
    err = Path(f"{artifact}.grpc_bench.err")
    proc, url, target = start_server(artifact, args.workers, err)
    port = int(url.rsplit(":", 1)[1])
    sent: Counter = Counter()   # (api, endpoint) -> requests sent
    t_start = time.time()
    channel = grpc.insecure_channel(target)
    pred = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    def predict_req(images: list[bytes]):
        req = predict_pb2.PredictRequest()
        req.model_spec.name = "bench"
        req.model_spec.signature_name = "serving_default"
        req.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(images, dtype=tf.string))
        return req

    # 1. the four RPCs with the official stubs
    checks = {}
    r = pred.Predict(predict_req(blobs[:2]), timeout=60)
    sent["grpc", "predict"] += 1
    checks["Predict"] = sorted(r.outputs) == ["cam", "class_index", "label", "probabilities"]
    creq = classification_pb2.ClassificationRequest()
    creq.model_spec.name = "bench"
    creq.input.example_list.examples.add().features.feature[
        "image_bytes"].bytes_list.value.append(blobs[0])
    c = pred.Classify(creq, timeout=60).result.classifications[0]
    sent["grpc", "classify"] += 1
    checks["Classify"] = [x.label for x in c.classes] == run.classes
    mreq = get_model_metadata_pb2.GetModelMetadataRequest()
    mreq.model_spec.name = "bench"
    mreq.metadata_field.append("signature_def")
    sdm = get_model_metadata_pb2.SignatureDefMap()
    pred.GetModelMetadata(mreq, timeout=60).metadata["signature_def"].Unpack(sdm)
    sent["grpc", "metadata"] += 1
    checks["GetModelMetadata"] = set(sdm.signature_def) == {"serving_default", "serving_pixels"}
    sreq = get_model_status_pb2.GetModelStatusRequest()
    sreq.model_spec.name = "bench"
    st = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(sreq, timeout=60)
    sent["grpc", "status"] += 1
    checks["GetModelStatus"] = (st.model_version_status[0].state ==
                                get_model_status_pb2.ModelVersionStatus.AVAILABLE)

    # 2. gRPC vs REST on every test image
    dp = dcam = 0.0
    labels_same = 0
    for b in blobs:
        g = pred.Predict(predict_req([b]), timeout=60)
        sent["grpc", "predict"] += 1
        g = {k: tf.make_ndarray(v) for k, v in g.outputs.items()}
        rr = rest_post(port, "/v1/models/bench:predict",
                       {"instances": [{"image_bytes": {"b64": base64.b64encode(b).decode()}}]})
        sent["rest", "predict"] += 1
        p = rr["predictions"][0]
        dp = max(dp, float(np.abs(g["probabilities"][0] - np.array(p["probabilities"])).max()))
        dcam = max(dcam, float(np.abs(g["cam"][0] - np.array(p["cam"])).max()))
        labels_same += g["label"][0].decode() == p["label"]

    # 3. load: REST, then gRPC, same clients x requests
    def load(api: str):
        lat, errors = [], []

        def worker(k: int) -> None:
            if api == "rest":
                client = Client(url, "bench", timeout=120)
            else:
                ch = grpc.insecure_channel(target)
                stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
                reqs = [predict_req([b]) for b in blobs]
            for i in range(args.requests):
                j = (k * 7 + i) % len(blobs)
                t = time.perf_counter()
                try:
                    if api == "rest":
                        client.predict([blobs[j]])
                    else:
                        stub.Predict(reqs[j], timeout=120)
                    lat.append(time.perf_counter() - t)
                except (ServingError, grpc.RpcError) as exc:
                    errors.append(str(exc)[:200])
            if api == "rest":
                client.close()
            else:
                ch.close()

        threads = [threading.Thread(target=worker, args=(k,), daemon=True)
                   for k in range(args.clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(1800)
        sent[api, "predict"] += args.clients * args.requests
        return lat, errors, time.perf_counter() - t0

    loads = {api: load(api) for api in ("rest", "grpc")}

    # 4. one Prometheus scrape
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/monitoring/prometheus/metrics")
    scrape = conn.getresponse().read().decode()
    conn.close()
    counted: Counter = Counter()
    state = None
    for fam in text_string_to_metric_families(scrape):
        for s in fam.samples:
            if s.name == "labtf_requests_total":
                counted[s.labels["api"], s.labels["endpoint"], s.labels["code"]] += s.value
            if s.name == "labtf_model_state" and s.value == 1.0:
                state = s.labels["state"]
    channel.close()
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(120)
    ok_code = {"rest": "200", "grpc": "OK"}
    count_rows = []
    for (api, endpoint), n in sorted(sent.items()):
        got = counted.get((api, endpoint, ok_code[api]), 0)
        others = sum(v for (a, e, code), v in counted.items()
                     if a == api and e == endpoint and code != ok_code[api])
        count_rows.append(f"| {api} | {endpoint} | {n} | {int(got)} | {int(others)} | "
                          f"{'yes' if got == n and not others else 'NO'} |")

    load_avg = os.getloadavg()
    n = args.clients * args.requests
    text = ["# labtf serve: TF Serving gRPC stubs beside REST, Prometheus counts\n",
            f"Command: `python benchmarks/grpc_bench.py {args.run} --clients {args.clients} "
            f"--requests {args.requests} --workers {args.workers}"
            f"{' --out ' + args.out if args.out else ''}`\n",
            f"Date {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {os.cpu_count()}-core CPU "
            f"({platform.processor() or platform.machine()}), shared: load average at the end "
            f"{load_avg[0]:.1f} / {load_avg[1]:.1f} / {load_avg[2]:.1f}; "
            f"{time.time() - t_start:.0f} s in all. Artifact `{artifact}` "
            f"({artifact.stat().st_size / 1e6:.1f} MB), {len(blobs)} test images as JPEG/PNG "
            f"bytes; server: {args.workers} worker(s), clients are Python threads on the same "
            "CPU, loopback; gRPC clients use the official tensorflow-serving-api stubs "
            "(one channel per thread).\n",
            "## Official stubs\n",
            "| RPC | passes |", "|---|---|",
            *[f"| {k} | {'yes' if v else 'NO'} |" for k, v in checks.items()], "",
            f"gRPC vs REST on all {len(blobs)} test images (one image per request): "
            f"max |dp| **{dp:.2e}**, max |dCAM| {dcam:.2e}, same label {labels_same}/{len(blobs)}.\n",
            f"## Load: {args.clients} clients x {args.requests} requests\n",
            "| API | answered | errors | req/s | p50 ms | p99 ms |", "|---|---|---|---|---|---|"]
    for api, (lat, errors, wall) in loads.items():
        text.append(f"| {api} | {len(lat)}/{n} | {len(errors)} | {len(lat) / wall:.1f} | "
                    f"{pct(lat, 50):.1f} | {pct(lat, 99):.1f} |")
        if errors:
            text.append(f"\nfirst {api} error: {errors[0]}\n")
    text += ["", "## Prometheus scrape after the load run (prometheus_client.parser)\n",
             f"Model state: {state}. Requests sent by this script vs "
             "`labtf_requests_total` (OK code / any other code):\n",
             "| API | endpoint | sent | counted OK | counted other | equal |",
             "|---|---|---|---|---|---|", *count_rows, "",
             f"SIGTERM: exit code {rc}.", ""]
    out = "\n".join(text)
    print(out)
    if args.out:
        Path(args.out).write_text(out)


if __name__ == "__main__":
    main()
