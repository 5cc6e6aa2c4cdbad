"""Load shedding of ``labtf serve``: an expensive flood beside cheap probes.

Flood threads send, in a loop, requests the server must refuse or isolate: 64 copies of a
6000x6000 1-bit PNG (2.3 GP, over the per-request pixel budget), 2 such images (72 MP:
admitted only if it can be decoded in time) and 24 2000x2000 1-bit PNGs (96 MP, seconds of
decoding in the heavy lane). One probe thread sends a small image every 100 ms. Goal: the
probes' p99 within 2x ``--timeout-s`` and no 5xx but the deliberate 503 (no 500/504).
Prints the figures and replaces its section of ``benchmarks/results/serving.md``.

    python benchmarks/shed_bench.py ARTIFACT.tflite [--seconds 30 --timeout-s 2 --max-pending 4]
"""
from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import platform
import shlex
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- shed_bench: start -->", "<!-- shed_bench: end -->"


def png(w: int, h: int, mode: str = "1") -> bytes:
    img = Image.new(mode, (w, h), 0)
    img.paste(1 if mode == "1" else (200, 30, 30), (w // 4, h // 4, w // 2, h // 2))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def body(blobs: list[bytes]) -> bytes:
    return json.dumps({"instances": [{"image_bytes": {"b64": base64.b64encode(b).decode()}}
                                     for b in blobs]}).encode()


def post(port: int, data: bytes, timeout: float) -> tuple[int, float]:
    t0 = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/v1/models/shed:predict", body=data,
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        return resp.status, time.monotonic() - t0
    except (OSError, http.client.HTTPException):
        return -1, time.monotonic() - t0
    finally:
        conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifact")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--timeout-s", type=float, default=2.0)
    ap.add_argument("--max-pending", type=int, default=4)
    ap.add_argument("--flood", type=int, default=3, help="flood threads")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serving.md"))
    args = ap.parse_args()
    load0 = os.getloadavg()[0]

    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"shed_bench_{os.getpid()}.log"
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "serve", args.artifact, "--port", "0",
                             "--timeout-s", str(args.timeout_s), "--max-pending", str(args.max_pending),
                             "--max-body-mb", "64", "--workers", "2", "--name", "shed",
                             "--access-log", str(log)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT)
    line = b""
    while b"serving on" not in line:
        if proc.poll() is not None:
            raise SystemExit("server did not start")
        line = proc.stdout.readline()
    port = int(line.decode().split("serving on ")[1].split("/")[2].rsplit(":", 1)[1])

    floods = {"64 x 6000x6000 1-bit PNG (2.3 GP)": body([png(6000, 6000)] * 64),
              "2 x 6000x6000 1-bit PNG (72 MP)": body([png(6000, 6000)] * 2),
              "24 x 2000x2000 1-bit PNG (96 MP)": body([png(2000, 2000)] * 24)}
    cheap = body([png(96, 96, "RGB")])
    flood_codes: dict[str, Counter] = {k: Counter() for k in floods}
    probe: list[tuple[int, float]] = []
    stop = time.monotonic() + args.seconds

    def flooder(k: int) -> None:
        names = list(floods)
        i = k
        while time.monotonic() < stop:
            name = names[i % len(names)]
            code, _ = post(port, floods[name], 120)
            flood_codes[name][code] += 1
            i += 1

    def prober() -> None:
        while time.monotonic() < stop:
            probe.append(post(port, cheap, 60))
            time.sleep(0.1)

    threads = [threading.Thread(target=flooder, args=(k,)) for k in range(args.flood)]
    threads.append(threading.Thread(target=prober))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    proc.terminate()
    proc.wait(60)

    lat = np.array([t for _, t in probe]) * 1000
    probe_codes = Counter(c for c, _ in probe)
    all_codes = sum(flood_codes.values(), Counter()) + probe_codes
    bad = {c: n for c, n in all_codes.items() if c >= 500 and c != 503 or c < 0}
    p50, p99 = float(np.percentile(lat, 50)), float(np.percentile(lat, 99))
    ok = p99 <= 2000 * args.timeout_s and not bad
    cmd = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])
    text = [START, "## Load shedding: expensive flood + cheap probes (`benchmarks/shed_bench.py`)\n",
            f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.node()} "
            f"({os.cpu_count()} CPUs, {platform.machine()}), load average before/after "
            f"{load0:.1f}/{os.getloadavg()[0]:.1f}; command: `{cmd}`.\n",
            f"Server: `labtf serve {Path(args.artifact).name} --timeout-s {args.timeout_s:g} "
            f"--max-pending {args.max_pending} --max-body-mb 64 --workers 2`; {args.flood} flood "
            f"thread(s) and one probe (96 px PNG every 100 ms) for {args.seconds:g} s.\n",
            "| requests | count | statuses |", "|---|---|---|"]
    for name, codes in flood_codes.items():
        text.append(f"| flood: {name} | {sum(codes.values())} | {dict(sorted(codes.items()))} |")
    text.append(f"| probes: 96 px PNG | {len(probe)} | {dict(sorted(probe_codes.items()))} |")
    text += ["", f"- probe latency p50 **{p50:.0f} ms**, p99 **{p99:.0f} ms** (goal <= 2x --timeout-s "
             f"= {2000 * args.timeout_s:.0f} ms)",
             f"- 5xx other than the deliberate 503 (or connection failures): **{sum(bad.values())}** {bad}",
             f"- goal met: **{ok}**", END]
    out = "\n".join(text)
    print(out)
    target = Path(args.out)
    old = target.read_text() if target.is_file() else ""
    if START in old and END in old:
        new = old[:old.index(START)] + out + old[old.index(END) + len(END):]
    else:
        new = old.rstrip("\n") + "\n\n" + out + "\n"
    target.write_text(new)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
