"""`labtf train --strategy multiworker`: two real worker processes on 127.0.0.1.

Each worker is a `cli.py train` process of its own, joined by
tf.distribute.MultiWorkerMirroredStrategy over gRPC on loopback ports.
"""
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from labtf.training import scratch_folder

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 900  # seconds for a whole job: two processes share two loaded cores

spawns = pytest.mark.skipif(not hasattr(os, "killpg") or sys.platform == "win32",
                            reason="needs POSIX process groups and signals to run and kill workers")


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    except OSError as exc:
        pytest.skip(f"cannot bind loopback ports for the workers: {exc}")
    finally:
        for s in socks:
            s.close()


def _args(data: Path, tmp: Path, out: Path, epochs: int, fine_tune: int) -> list[str]:
    return ["train", str(data), "--weights", "none", "--image-size", "64", "--batch-size", "8",
            "--epochs", str(epochs), "--fine-tune-epochs", str(fine_tune), "--fine-tune-blocks", "1",
            "--patience", "0", "--split-file", str(tmp / "split.csv"), "--strategy", "multiworker",
            "--out", str(out)]


def _start(args: list[str], tmp: Path, tag: str) -> list[subprocess.Popen]:
    cluster = ",".join(f"127.0.0.1:{p}" for p in _free_ports(2))
    env = {**os.environ, "LABTF_CACHE": str(tmp / "cache"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("TF_CONFIG", None)
    procs = []
    for i in range(2):
        log = open(tmp / f"{tag}-worker{i}.log", "wb")
        procs.append(subprocess.Popen(
            [sys.executable, str(ROOT / "cli.py"), *args, "--cluster", cluster, "--worker-index",
             str(i)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        log.close()
    return procs


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _finish(procs: list[subprocess.Popen], tmp: Path, tag: str, timeout: float = TIMEOUT) -> None:
    """Wait for every worker; kill all and fail with their logs past ``timeout``."""
    deadline = time.time() + timeout
    for p in procs:
        try:
            p.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            pass
    for p in procs:
        _kill(p)
    logs = "\n".join((tmp / f"{tag}-worker{i}.log").read_text(errors="replace")[-2500:]
                     for i in range(len(procs)))
    assert [p.returncode for p in procs] == [0] * len(procs), logs


def _history(out: Path) -> list[dict]:
    with open(out / "history.csv") as fh:
        return list(csv.DictReader(fh))


def test_cluster_option_errors(monkeypatch):
    from labtf.distribute import Worker, set_cluster, worker
    from labtf.errors import LabtfError

    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(LabtfError, match="needs the cluster: pass --cluster"):
        worker("multiworker")
    assert worker("default") == Worker(0, 1)
    for bad, match in [("10.0.0.1", "not host:port"), ("a:1,a:99999", "not host:port"),
                       ("a:1,a:1", "appears twice")]:
        with pytest.raises(LabtfError, match=match):
            set_cluster(bad, 0)
    with pytest.raises(LabtfError, match=r"--worker-index 2 is outside .* use 0..1"):
        set_cluster("h1:1,h2:2", 2)
    tf_config = set_cluster("h1:1,[::1]:2", 1)
    assert tf_config["cluster"]["worker"] == ["h1:1", "[::1]:2"]
    assert json.loads(os.environ["TF_CONFIG"]) == tf_config
    assert worker("multiworker") == Worker(1, 2) and not worker("multiworker").chief
    # a TF_CONFIG with a separate chief task: the chief is worker 0
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["c:1"], "worker": ["w:1"]},
                                                "task": {"type": "worker", "index": 0}}))
    assert worker("multiworker") == Worker(1, 2)


def test_cli_refuses_cluster_without_multiworker_and_on_jax(shared_data, tmp_path):
    base = [sys.executable, str(ROOT / "cli.py"), "train", str(shared_data), "--out",
            str(tmp_path / "run")]
    res = subprocess.run(base + ["--cluster", "127.0.0.1:1,127.0.0.1:2", "--worker-index", "0"],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 2 and res.stderr.strip().splitlines()[-1] == \
        "error: --cluster and --worker-index are for --strategy multiworker"
    pytest.importorskip("jax")
    res = subprocess.run(base + ["--strategy", "multiworker", "--cluster", "127.0.0.1:1,127.0.0.1:2",
                                 "--worker-index", "0", "--weights", "none"],
                         capture_output=True, text=True, timeout=900,
                         env={**os.environ, "KERAS_BACKEND": "jax"})
    assert res.returncode == 2, res.stderr[-2000:]
    assert res.stderr.strip().splitlines()[-1].startswith(
        "error: strategy multiworker is TensorFlow-only; run it with KERAS_BACKEND=tensorflow")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@spawns
def test_two_workers_train_to_the_end(shared_data, tmp_path):
    out = tmp_path / "run"
    _finish(_start(_args(shared_data, tmp_path, out, 2, 1), tmp_path, "run"), tmp_path, "run")
    rows = _history(out)
    assert [(int(r["epoch"]), int(r["stage"])) for r in rows] == [(1, 1), (2, 1), (3, 2)]
    meta = json.loads((out / "run.json").read_text())
    assert meta["n_train"] + meta["n_val"] + meta["n_test"] == 60
    assert json.loads((out / "config.json").read_text())["strategy"] == "multiworker"
    assert not (out / "backup").exists()
    # worker 1 trained in a scratch folder that is gone; it said where the run is
    assert not scratch_folder(out, 1).exists()
    w1 = (tmp_path / "run-worker1.log").read_text()
    assert "worker 1 of 2" in w1 and f"worker 1 done; the chief (worker 0) wrote the run to {out}" in w1
    assert "strategy multiworker: 2 replica(s)" in (tmp_path / "run-worker0.log").read_text()
    from labtf.predict import KerasPredictor

    probs = KerasPredictor(out).predict_batch(np.full((2, 64, 64, 3), 128, np.float32))
    assert probs.shape == (2, 3) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)


@pytest.mark.slow
@spawns
def test_killed_worker_resumes_the_whole_job(shared_data, tmp_path):
    """SIGKILL worker 1 mid-epoch, restart both with --resume: the job ends with every epoch once."""
    out, epochs = tmp_path / "run", 4
    args = _args(shared_data, tmp_path, out, epochs, 0)
    procs = _start(args, tmp_path, "first")
    log = out / "history_stage1.csv"
    deadline = time.time() + TIMEOUT
    while time.time() < deadline and all(p.poll() is None for p in procs):
        if log.is_file() and len(log.read_text().splitlines()) >= 2:  # header + epoch 1
            break
        time.sleep(0.2)
    assert all(p.poll() is None for p in procs), "a worker ended before the first checkpoint"
    os.killpg(procs[1].pid, signal.SIGKILL)
    procs[1].wait()
    done = len(log.read_text().splitlines()) - 1
    assert done < epochs
    # the chief cannot go on without its peer: it notices and stops with one error line
    try:
        procs[0].wait(timeout=300)
    finally:
        _kill(procs[0])
    chief = (tmp_path / "first-worker0.log").read_text()
    assert procs[0].returncode == 2, chief[-3000:]
    assert "error: worker 0: worker 1 stopped; the job cannot go on without it. Restart every " \
        "worker with the same command plus --resume" in chief and "Traceback" not in chief
    assert not (out / "model.keras").exists()
    _finish(_start(args + ["--resume"], tmp_path, "resumed"), tmp_path, "resumed")
    rows = _history(out)
    assert [int(r["epoch"]) for r in rows] == list(range(1, epochs + 1))
    assert {int(r["stage"]) for r in rows} == {1}
    with open(log) as fh:  # the restarted job continued after the checkpoint, not from 0
        assert [int(r["epoch"]) for r in csv.DictReader(fh)] == list(range(epochs))
    assert (out / "model.keras").is_file() and not scratch_folder(out, 1).exists()
