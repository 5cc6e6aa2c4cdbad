"""The demo job trained by two workers on loopback vs one process: test accuracy and time.

One process: ``python cli.py train datasets/clipart`` with the demo's settings
(labtf.demo.DEMO_SETTINGS). Two workers: the same command with ``--strategy
multiworker --cluster 127.0.0.1:P0,127.0.0.1:P1 --worker-index I`` in two
processes, each with half the batch, so the global batch (and the number of
steps per epoch) is the single process's. Both use the committed split and are
evaluated on its test images with ``labtf evaluate``. Target: accuracies
within 2 points. ``--image-size`` / ``--epochs`` / ``--fine-tune-epochs``
shorten the job on a loaded machine.

Usage: python benchmarks/multiworker.py [--out runs/multiworker-bench] [--record FILE]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def demo_args(out: Path, batch_size: int, **overrides) -> list[str]:
    """`labtf train` arguments for the demo settings with ``batch_size`` per worker."""
    from labtf.demo import DEMO_SETTINGS, embedded_dataset

    flags = {"early_stopping_patience": "patience"}
    args = ["train", str(embedded_dataset())]
    for key, value in {**DEMO_SETTINGS, **overrides, "batch_size": batch_size}.items():
        args += [f"--{flags.get(key, key).replace('_', '-')}", str(value)]
    return args + ["--out", str(out)]


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def start(commands: list[list[str]], logs: list[Path]) -> list[subprocess.Popen]:
    """Start the commands side by side."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    return [subprocess.Popen([sys.executable, str(ROOT / "cli.py"), *c], env=env,
                             stdout=open(log, "wb"), stderr=subprocess.STDOUT)
            for c, log in zip(commands, logs)]


def finish(procs: list[subprocess.Popen], logs: list[Path], t0: float) -> float:
    """Wait for the processes; wall seconds since ``t0``. Raises on a non-zero exit."""
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"exit codes {codes}; see {', '.join(map(str, logs))}")
    return time.time() - t0


def summary(run_dir: Path, wall: float) -> dict:
    """Test accuracy, epochs trained and wall time of a finished, evaluated run."""
    subprocess.run([sys.executable, str(ROOT / "cli.py"), "evaluate", str(run_dir)], check=True,
                   capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    metrics = json.loads((run_dir / "metrics.json").read_text())
    with open(run_dir / "history.csv") as fh:
        rows = list(csv.DictReader(fh))
    meta = json.loads((run_dir / "run.json").read_text())
    return {"accuracy": metrics["accuracy"], "n_test": metrics["n_test"], "epochs": len(rows),
            "kept": meta["kept_epoch"].get("epoch"), "wall": wall, "fit": meta["fit_seconds"]}


def epoch_lines(log: Path) -> list[str]:
    """The per-epoch Keras lines of a worker's log, without the timing fields."""
    lines = [x for x in log.read_text(errors="replace").splitlines() if " - loss: " in x or
             " - accuracy: " in x]
    return [" - ".join(p for p in x.split(" - ") if not p.endswith(("s", "s/step"))) for x in lines]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/multiworker-bench")
    ap.add_argument("--record", default=None, help="Write the results to this Markdown file.")
    ap.add_argument("--image-size", type=int, default=None, help="Override the demo's 224.")
    ap.add_argument("--epochs", type=int, default=None, help="Override the demo's 20.")
    ap.add_argument("--fine-tune-epochs", type=int, default=None, help="Override the demo's 10.")
    args = ap.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from record import Recorder

    rec = Recorder()   # provenance of the results file: command, commit, machine, load
    from labtf.demo import DEMO_SETTINGS

    overrides = {k: v for k, v in (("image_size", args.image_size), ("epochs", args.epochs),
                                   ("fine_tune_epochs", args.fine_tune_epochs)) if v is not None}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    batch = DEMO_SETTINGS["batch_size"]
    one, two = out / "one", out / "two"
    cluster = ",".join(f"127.0.0.1:{p}" for p in free_ports(2))
    mw = ["--strategy", "multiworker", "--cluster", cluster]
    logs = [out / f"two-worker{i}.log" for i in range(2)]
    # the single process and the two workers run at the same time (the 2-core machine is
    # shared anyway): wall times are not a speed comparison, accuracies are the result
    t0 = time.time()
    single = start([demo_args(one, batch, **overrides)], [out / "one.log"])
    pair = start([demo_args(two, batch // 2, **overrides) + mw + ["--worker-index", str(i)]
                  for i in range(2)], logs)
    results = {"two": summary(two, finish(pair, logs, t0)),
               "one": summary(one, finish(single, [out / "one.log"], t0))}
    same = epoch_lines(logs[0]) == epoch_lines(logs[1])
    diff = 100 * (results["two"]["accuracy"] - results["one"]["accuracy"])
    lines = ["| training | processes | batch per worker | epochs run | kept epoch | test accuracy | "
             "fit s | wall s |", "|---|---|---|---|---|---|---|---|"]
    for key, procs, b in (("one", 1, batch), ("two", 2, batch // 2)):
        r = results[key]
        lines.append(f"| {'single process' if procs == 1 else 'multiworker, 127.0.0.1'} | {procs} | "
                     f"{b} | {r['epochs']} | {r['kept']} | {100 * r['accuracy']:.2f}% "
                     f"({r['n_test']} images) | {r['fit']:.0f} | {r['wall']:.0f} |")
    settings = ", ".join(f"{k} {v}" for k, v in {**DEMO_SETTINGS, **overrides}.items())
    verdict = (f"Settings: {settings} (batch_size per worker as above). "
               f"Difference: {diff:+.2f} points (target: within 2 points: "
               f"{'met' if abs(diff) <= 2 else 'NOT met'}). Both workers logged the same "
               f"per-epoch metrics: {'yes' if same else 'NO'}.")
    text = "\n".join(lines) + "\n\n" + verdict
    print(text)
    if args.record:
        rec.write(args.record, "# Demo job: two workers (MultiWorkerMirroredStrategy on loopback) "
                  "vs one process\n\n" + (__doc__.split("\n\n")[1]) + "\n\n" + text)


if __name__ == "__main__":
    main()
