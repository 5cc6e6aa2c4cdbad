"""Hostile training faults: SIGKILL anywhere, then --resume; --resume on a finished run."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labtf.config import TrainConfig
from labtf.training import _early_stop_state, _stage_rows, fit_from_backup, train

ROOT = Path(__file__).resolve().parent.parent
ARGS = ["--backbone", "efficientnet_lite0", "--weights", "none", "--image-size", "64",
        "--batch-size", "8", "--epochs", "3", "--fine-tune-epochs", "3", "--fine-tune-blocks", "1",
        "--patience", "0"]
#: The default path (a trunk cache, here of 2 views) and the whole network every epoch.
MODES = {"cached": ["--cache-views", "2"], "uncached": ["--cache-views", "0"]}


def _train_cmd(data, out, split, *extra, mode="cached"):
    return [sys.executable, str(ROOT / "cli.py"), "train", str(data), *ARGS, *MODES[mode],
            "--split-file", str(split), "--out", str(out), *extra]


def _rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _kill_when(cmd, env, ready, what: str) -> None:
    """Start ``cmd``, SIGKILL its process group as soon as ``ready()`` holds."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.time() + 900
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.05)
    alive = proc.poll() is None
    os.killpg(proc.pid, signal.SIGKILL)
    out = proc.communicate()[0].decode(errors="replace")
    assert alive and ready(), f"{what}: the process ended before the kill point\n{out[-3000:]}"


@pytest.fixture(scope="module")
def references(tmp_path_factory, shared_data):
    """mode -> the same config trained without interruption (made on first use)."""
    done: dict = {}

    def get(mode: str):
        if mode not in done:
            base = tmp_path_factory.mktemp(f"resume-{mode}")
            env = {**os.environ, "LABTF_CACHE": str(base / "cache")}
            split, ref = base / "split.csv", base / "uninterrupted"
            res = subprocess.run(_train_cmd(shared_data, ref, split, mode=mode), env=env,
                                 capture_output=True, text=True, timeout=1200)
            assert res.returncode == 0, res.stderr[-3000:]
            done[mode] = ref, split, env
        return done[mode]

    return get


def _kill_points(out: Path) -> dict:
    h1, h2, state = out / "history_stage1.csv", out / "history_stage2.csv", out / "state.json"
    return {
        "stage 1 after epoch 1": lambda: len(_rows(h1)) >= 1,
        # stage 1's last row is logged: the kill lands before or after state.json records it
        "at the end of stage 1": lambda: len(_rows(h1)) >= 3,
        "between the stages": lambda: state.is_file() and json.loads(state.read_text())["done"] == [1],
        "stage 2 after epoch 1": lambda: len(_rows(h2)) >= 1,
    }


@pytest.mark.slow
@pytest.mark.parametrize("mode,kills", [
    ("cached", ["stage 1 after epoch 1"]),
    ("cached", ["at the end of stage 1", "stage 2 after epoch 1"]),
    ("cached", ["between the stages", "stage 2 after epoch 1"]),
    ("uncached", ["stage 1 after epoch 1"]),        # the reported bug: stage 2 lost epochs
], ids=["stage1", "end1-stage2", "between-stage2", "uncached-stage1"])
def test_killed_anywhere_resumes_like_an_uninterrupted_run(tmp_path, shared_data, references,
                                                           mode, kills):
    """SIGKILL at each point in turn, --resume after each; the finished run must have the
    epochs and stages of an uninterrupted run of the same config, every stage-2 epoch (the
    bug: a resumed stage 1 left keras' ``_initial_epoch`` on the model, so stage 2 started at
    stage 1's epoch), and keep the checkpoint of the lowest-val_loss row of its history.
    """
    ref, split, env = references(mode)
    out = tmp_path / "killed"
    points = _kill_points(out)
    for i, what in enumerate(kills):
        _kill_when(_train_cmd(shared_data, out, split, *(["--resume"] if i else []), mode=mode),
                   env, points[what], what)
        assert not (out / "model.keras").exists(), what
    res = subprocess.run(_train_cmd(shared_data, out, split, "--resume", mode=mode), env=env,
                         capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stderr[-3000:]

    got, want = _rows(out / "history.csv"), _rows(ref / "history.csv")
    assert [(r["epoch"], r["stage"]) for r in got] == [(r["epoch"], r["stage"]) for r in want]
    assert [(r["epoch"], r["stage"]) for r in got] == [
        ("1", "1"), ("2", "1"), ("3", "1"), ("4", "2"), ("5", "2"), ("6", "2")]
    assert [int(r["epoch"]) for r in _rows(out / "history_stage2.csv")] == [0, 1, 2]
    meta, ref_meta = (json.loads((d / "run.json").read_text()) for d in (out, ref))
    for m, rows in ((meta, got), (ref_meta, want)):
        best = min(rows, key=lambda r: float(r["val_loss"]))
        assert m["kept_epoch"]["epoch"] == int(best["epoch"])
        assert m["kept_epoch"]["stage"] == int(best["stage"])
        assert m["best_val_loss"] == pytest.approx(float(best["val_loss"]))
    assert set(meta["kept_epoch"]) == set(ref_meta["kept_epoch"])
    assert json.loads((out / "state.json").read_text())["done"] == [1, 2]
    assert not (out / "backup").exists()


def test_resume_of_a_finished_run_changes_nothing(tmp_path, tiny_data, caplog):
    """--resume on a finished run says so and rewrites neither model.keras nor run.json."""
    out = tmp_path / "run"
    out.mkdir()
    cfg = TrainConfig(data=str(tiny_data), weights="none", image_size=64)
    (out / "config.json").write_text(json.dumps(cfg.to_dict()))
    (out / "model.keras").write_bytes(b"the trained model")
    (out / "run.json").write_text('{"train_seconds": 35.1}')
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}
    with caplog.at_level("INFO", logger="labtf.training"):
        run = train(cfg, out, resume=True)
    assert run.path == out
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()} == before
    assert "finished run" in caplog.text and "nothing changed" in caplog.text
    from click.testing import CliRunner

    import cli

    res = CliRunner().invoke(cli.main, ["train", str(tiny_data), "--weights", "none",
                                        "--out", str(out), "--resume"])
    assert res.exit_code == 0 and "already finished; nothing changed" in res.output
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()} == before


def test_resume_rows_past_the_backup_run_again(tmp_path):
    """A row logged after the last backup (kill between the two writes) is dropped."""
    (tmp_path / "history_stage1.csv").write_text("epoch,loss,val_loss\n0,1.0,1.1\n1,0.9,1.0\n2,0.8,0.9\n")
    backup = tmp_path / "backup" / "stage1"
    backup.mkdir(parents=True)
    (backup / "training_metadata.json").write_text('{"epoch": 2, "batch": 0}')
    rows = _stage_rows(tmp_path, 1)
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert (tmp_path / "history_stage1.csv").read_text() == "epoch,loss,val_loss\n0,1.0,1.1\n1,0.9,1.0\n"


def test_early_stopping_replay_matches_keras():
    """The patience state rebuilt from a killed stage's rows is keras' own."""
    import keras
    import numpy as np

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    values = [1.0, 0.9, 0.95, 0.92, 0.91, 0.85, 0.9, 0.9, 0.9]
    for patience in (1, 2, 3):
        es = keras.callbacks.EarlyStopping(monitor="val_loss", mode="min", patience=patience)
        es.set_model(model)
        model.stop_training = False
        es.on_train_begin()
        for n, v in enumerate(values, 1):
            es.on_epoch_end(n - 1, {"val_loss": v})
            stopped, wait, best = _early_stop_state(values[:n], patience)
            assert (stopped, wait, best) == (model.stop_training, es.wait, es.best), (patience, n)
            if stopped:
                break
        assert np.isclose(best, min(values[:n]))


def test_a_fit_after_a_resumed_fit_runs_all_its_epochs(tmp_path):
    """The defect in small: fit 1 is killed after epoch 2 and resumed from its backup; fit 2
    (stage 2) must run all its epochs. Plain ``model.fit`` ran 1 of 3 (keras' leftover
    ``_initial_epoch``)."""
    import keras
    import numpy as np

    class Kill(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt     # after BackupAndRestore saved epoch 2

    x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    y = (x[:, :1] > 0).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    backup = str(tmp_path / "backup")
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, epochs=4, verbose=0,
                  callbacks=[keras.callbacks.BackupAndRestore(backup), Kill()])
    resumed = fit_from_backup(model, x, y, epochs=4, verbose=0,
                              callbacks=[keras.callbacks.BackupAndRestore(backup)])
    assert resumed.epoch == [2, 3]
    stage2 = fit_from_backup(model, x, y, epochs=3, verbose=0)
    assert stage2.epoch == [0, 1, 2]
