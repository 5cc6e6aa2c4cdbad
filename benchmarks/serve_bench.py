"""Edge server under load: requests/s, p50/p99 latency, HTTP overhead, 5xx count, RSS growth.

Serves a run's TF-Lite model with ``labtf serve`` (subprocess, loopback), compares
with in-process prediction on the same images, runs the bad-request suite and a
bounded load test (CLIENTS threads x REQUESTS each), and records the server's RSS
before and after. Writes a Markdown table.

    cp -r /tmp/demo_t /tmp/demo_srv
    python benchmarks/serve_bench.py /tmp/demo_srv --out benchmarks/results/serving.md
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
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from record import Recorder  # noqa: E402  (benchmarks/record.py)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))


def start_server(artifact: Path, workers: int, batch_ms: float, log: Path):
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "serve", str(artifact), "--port", "0",
                             "--workers", str(workers), "--batch-ms", str(batch_ms), "--name", "bench",
                             "--access-log", str(log)],
                            stdout=subprocess.PIPE, stderr=open(log.with_suffix(".err"), "wb"), cwd=ROOT)
    t0, line = time.monotonic(), b""
    while b"serving on" not in line:
        if proc.poll() is not None or time.monotonic() - t0 > 120:
            proc.kill()
            raise SystemExit(f"server did not start; see {log.with_suffix('.err')}")
        line = proc.stdout.readline()
    url = "/".join(line.decode().split("serving on ")[1].split("/")[:3])
    return proc, url


def bad_suite(port: int, limit_mb: float) -> list[int]:
    """The malformed requests of tests/test_serving.py; returns the status codes."""
    cases = [("POST", "/v1/models/bench:predict", b'{"instances": ['),
             ("POST", "/v1/models/bench:predict", b'{"instances": [{"image_bytes": {"b64": "%%%"}}]}'),
             ("POST", "/v1/models/bench:predict",
              json.dumps({"instances": [{"image_bytes": {"b64": base64.b64encode(b"hi").decode()}}]})
              .encode()),
             ("POST", "/v1/models/bench:predict", b'{"foo": 1}'),
             ("POST", "/v1/models/bench:predict", b"x" * int((limit_mb + 0.5) * 1e6)),
             ("POST", "/v1/models/nope:predict", b"{}"),
             ("GET", "/v1/models/bench/versions/7", None),
             ("GET", "/v1/models/bench:predict", None),
             ("GET", "/nothing", None)]
    codes = []
    for method, path, body in cases:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            codes.append(resp.status)
        finally:
            conn.close()
    return codes


def load(url: str, blobs: list[bytes], clients: int, requests: int) -> tuple[list, list, float]:
    from labtf.serving.client import Client, ServingError

    lat, errors = [], []

    def worker(k: int) -> None:
        c = Client(url, "bench", timeout=60)
        for i in range(requests):
            t = time.perf_counter()
            try:
                c.predict([blobs[(k * 7 + i) % len(blobs)]])
                lat.append(time.perf_counter() - t)
            except ServingError as exc:
                errors.append(exc.status or 599)
        c.close()

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(900)
    return lat, errors, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="run folder (a copy: the int8 export is written next to it)")
    ap.add_argument("--artifact", default=None, help=".tflite to serve [RUN_export/model_int8.tflite]")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=200, help="per client")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-ms", type=float, default=0.0)
    ap.add_argument("--out", default=None, help="Markdown file to write")
    ap.add_argument("--append", action="store_true", help="append to --out instead")
    args = ap.parse_args()
    rec = Recorder()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from exporters import export
    from exporters.common import split_samples
    from labtf.predict import open_predictor, predict_files
    from labtf.run import Run
    from labtf.serving.client import Client

    run = Run.open(args.run)
    artifact = Path(args.artifact or f"{Path(args.run).resolve()}_export/model_int8.tflite")
    if not artifact.is_file():
        export(args.run, "tflite", artifact.parent, quantize="int8")
    paths = [s.path for s in split_samples(run, "test")]
    blobs = [Path(p).read_bytes() for p in paths]

    pred = open_predictor(artifact)
    predict_files(pred, paths[:3], with_cam=True)

    log = Path(f"{artifact}.access.log")
    log.unlink(missing_ok=True)
    proc, url = start_server(artifact, args.workers, args.batch_ms, log)
    port = int(url.rsplit(":", 1)[1])
    warm = Client(url, "bench", timeout=60)
    for b in blobs[:20]:
        warm.predict([b])
    # steady state before the baseline: one bad-request suite (its 413 path buffers a body
    # over the limit once) and a short concurrent burst (every worker's interpreter, the
    # connection handlers), so the growth figure measures leaks, not first-use allocations
    bad_suite(port, 10.0)
    load(url, blobs, args.clients, 10)
    rss0 = rss_mb(proc.pid)
    local, seq = [], []   # interleaved in rounds, so that load from others hits both alike
    for i in range(args.requests):
        t = time.perf_counter()
        predict_files(pred, [paths[i % len(paths)]], with_cam=True)
        local.append(time.perf_counter() - t)
        t = time.perf_counter()
        warm.predict([blobs[i % len(blobs)]])
        seq.append(time.perf_counter() - t)
    warm.close()
    del pred
    codes = bad_suite(port, 10.0)
    lat, errors, wall = load(url, blobs, args.clients, args.requests)
    codes += bad_suite(port, 10.0)
    rss1 = rss_mb(proc.pid)
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(60)
    records = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
    five = sum(r["status"] >= 500 for r in records)
    n = args.clients * args.requests
    rows = [
        ("in-process `predict_files` (Pillow decode + TF-Lite + CAM, batch 1, 1 thread)",
         f"{len(local) / sum(local):.1f} img/s", f"{pct(local, 50):.1f}", f"{pct(local, 99):.1f}"),
        ("edge server, 1 client sequential",
         f"{len(seq) / sum(seq):.1f} req/s", f"{pct(seq, 50):.1f}", f"{pct(seq, 99):.1f}"),
        (f"edge server, {args.clients} clients x {args.requests}",
         f"{len(lat) / wall:.1f} req/s", f"{pct(lat, 50):.1f}", f"{pct(lat, 99):.1f}"),
    ]
    text = ["# Edge server (`labtf serve`) under load\n",
            f"Command: `python benchmarks/serve_bench.py {args.run} --clients {args.clients} "
            f"--requests {args.requests} --workers {args.workers} --batch-ms {args.batch_ms:g}"
            f"{' --out ' + args.out if args.out else ''}{' --append' if args.append else ''}`\n",
            f"Artifact: `{artifact}` ({artifact.stat().st_size / 1e6:.1f} MB, int8 TF-Lite, "
            f"{pred_size(run)} px), {len(paths)} test images of the run as JPEG/PNG bytes; "
            f"server: {args.workers} worker(s), batch-ms {args.batch_ms:g}; clients are Python threads "
            f"(http.client keep-alive) on the same {os.cpu_count()}-core CPU "
            f"({platform.processor() or platform.machine()}), loopback.\n",
            "| what | throughput | p50 ms | p99 ms |", "|---|---|---|---|",
            *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows], "",
            f"- HTTP overhead (server p50, 1 client / in-process p50): "
            f"**{pct(seq, 50) / pct(local, 50):.2f}x** "
            f"({pct(seq, 50) - pct(local, 50):+.1f} ms per request: base64 + JSON with the CAM, "
            "loopback HTTP; the two are measured interleaved)",
            f"- load test: {len(lat)}/{n} answered, client errors: {len(errors)}",
            f"- bad-request suite (run before and after the load test): statuses "
            f"{sorted(set(codes))}, all 4xx: {all(400 <= c < 500 for c in codes)}",
            f"- 5xx in the access log ({len(records)} requests): **{five}**",
            f"- server RSS after warm-up (one bad-request suite, {args.clients}x10 concurrent requests) "
            f"{rss0:.0f} MB, after the suites and load test {rss1:.0f} MB: "
            f"growth **{100 * (rss1 - rss0) / rss0:+.1f}%**",
            f"- SIGTERM: exit code {rc}",
            ""]
    out = "\n".join(text)
    print(out)
    if args.out:
        rec.write(args.out, out, append=args.append)


def pred_size(run) -> int:
    return int(run.meta["image_size"])


if __name__ == "__main__":
    main()
