"""Hostile CLI / manifest / model-file inputs: one error line each, never a traceback."""
from __future__ import annotations

import csv
import os
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from labtf.errors import LabtfError
from labtf.manifest import read_manifest


def _cli(*args):
    """Run the CLI in-process (TensorFlow imported once); stderr shows an uncaught exception
    as 'Traceback' like the console script would."""
    import traceback
    from types import SimpleNamespace

    from click.testing import CliRunner

    import cli

    res = CliRunner().invoke(cli.main, [str(a) for a in args])
    stderr = res.stderr
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        stderr += "Traceback\n" + "".join(traceback.format_exception(res.exception))
    return SimpleNamespace(returncode=res.exit_code, stdout=res.stdout, stderr=stderr)


def _one_line_error(proc, message: str, rc: int = 2) -> None:
    assert proc.returncode == rc, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], proc.stderr[-2000:]


def _manifest(tiny_data: Path, text: str, name: str = "m.csv", raw: bytes | None = None) -> Path:
    path = tiny_data / name
    if raw is not None:
        path.write_bytes(raw)
    else:
        path.write_text(text, encoding="utf-8")
    return path


GOOD = "red_disc/000.jpg,red_disc,train\ngreen_square/000.jpg,green_square,test\n"


@pytest.mark.parametrize("body,message", [
    ("path,label,split\nred_disc/000.jpg\n" + GOOD, "line 2: 1 value(s) for the 3 columns"),
    ("path,label,split\n" + GOOD + "blue_bar/001.png,,train\n", "line 4: the label is empty"),
    ("path,label,split\n" + GOOD + "blue_bar/001.png, ,train\n", "line 4: the label is empty"),
    ("path,label,split\n" + GOOD + "blue_bar/001.png,a\x01b,train\n", "control character"),
    ("path,label,split\n" + GOOD + "blue_bar/001.png,../up,train\n", "path separator"),
    ("path,label,split\n" + GOOD + "blue_bar/001.png,blue,tset\n", "line 4: split 'tset'"),
    ("path,label,split\n" + GOOD + "red_disc/000.jpg,red_disc,extra,cells\n",
     "line 4: 4 value(s) for the 3 columns"),
])
def test_bad_rows_name_their_line(tiny_data, body, message):
    with pytest.raises(LabtfError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_manifest(_manifest(tiny_data, body), validate=False)


def test_duplicate_rows_are_refused_with_line_numbers(tiny_data):
    body = ("path,label,split\nred_disc/001.png,red_disc,test\ngreen_square/000.jpg,green_square,"
            "train\nred_disc/001.png,blue_bar,test\n./red_disc/001.png,red_disc,train\n")
    with pytest.raises(LabtfError) as exc:
        read_manifest(_manifest(tiny_data, body), validate=False)
    msg = str(exc.value)
    assert "3 rows list 1 image(s) more than once" in msg
    assert "line 2 (red_disc/test), line 4 (blue_bar/test), line 5 (red_disc/train)" in msg


def test_bom_header_and_spaces_are_accepted(tiny_data):
    body = "path, label ,split\n" + GOOD + "blue_bar/001.png,blue_bar,train\n"
    idx = read_manifest(_manifest(tiny_data, "", raw=b"\xef\xbb\xbf" + body.encode()), validate=False)
    assert idx.classes == ["blue_bar", "green_square", "red_disc"] and len(idx.samples) == 3


def test_binary_manifest_is_one_line(tiny_data):
    raw = bytes(range(256)) * 8
    with pytest.raises(LabtfError, match="not UTF-8 CSV text"):
        read_manifest(_manifest(tiny_data, "", raw=raw))
    with pytest.raises(LabtfError, match="line 2: the path holds a NUL byte"):
        read_manifest(_manifest(tiny_data, "", raw=b"path,label\na\x00b,c\n"))


@pytest.mark.parametrize("case", ["short", "binary", "nul", "dup", "out_is_file"])
def test_cli_manifest_mistakes_are_one_line(tiny_data, tmp_path, case):
    out = tmp_path / "run"
    bodies = {"short": ("path,label,split\nred_disc/000.jpg\n", "line 2"),
              "binary": (None, "not UTF-8 CSV text"),
              "nul": ("path,label\nred_disc/000.jpg,re\x00d\n",
                      "line 2: the label 're\\x00d' holds a control"),
              "dup": ("path,label\nred_disc/000.jpg,a\nred_disc/000.jpg,b\n", "line 2 (a), line 3 (b)"),
              "out_is_file": (None, "is a file, not a run folder")}
    body, message = bodies[case]
    if case == "out_is_file":
        data, out = tiny_data, tmp_path / "taken"
        out.write_text("a user's file")
    elif body is None:
        data = _manifest(tiny_data, "", raw=b"\x89PNG\r\n\x1a\n\x00\xff\xfe" * 50)
    else:
        data = _manifest(tiny_data, body)
    proc = _cli("train", data, "--weights", "none", "--out", out)
    _one_line_error(proc, message)
    if case == "out_is_file":
        assert out.read_text() == "a user's file"


def test_out_inside_a_file_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = _cli("split", tmp_path / "nowork", "--out", blocker / "split.csv")
    assert "Traceback" not in proc.stderr and proc.returncode == 2


def test_predictions_csv_quotes_commas_and_newlines(tmp_path):
    from labtf.evaluation import _write_predictions
    from labtf.manifest import Sample

    samples = [Sample(str(tmp_path / "has,comma.jpg"), "a", "test"),
               Sample(str(tmp_path / "new\nline.jpg"), "b", "test"),
               Sample(str(tmp_path / 'quote".jpg'), "a", "test")]
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.2, 0.8]])
    _write_predictions(tmp_path / "predictions.csv", samples, ["a", "b"], probs)
    with open(tmp_path / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["path"] for r in rows] == [s.path for s in samples]
    assert [(r["label"], r["predicted"], r["confidence"]) for r in rows] == [
        ("a", "a", "0.9000"), ("b", "b", "0.7000"), ("a", "b", "0.8000")]


# -- model files ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run folder holding an untrained 64 px EfficientNet-Lite0 (no training needed)."""
    from labtf.backbones import get_backbone
    from labtf.model import build_classifier, cam_layer_name
    from labtf.run import write_json

    spec = get_backbone("efficientnet_lite0")
    model = build_classifier(spec, 3, 64, None)
    out = tmp_path_factory.mktemp("tinyrun") / "run"
    out.mkdir()
    model.save(out / "model.keras")
    write_json(out / "classes.json", ["a", "b", "c"])
    write_json(out / "run.json", {"backbone": spec.name, "image_size": 64, "resize": "crop",
                                  "cam_layer": cam_layer_name(model, spec)})
    return out


def _png_bomb(path: Path, side: int) -> Path:
    from test_hostile_curate import _png_bomb as bomb

    return bomb(path, side)


def test_predict_refuses_a_169_megapixel_png(tiny_run, tmp_path, tiny_data, caplog):
    bomb = _png_bomb(tmp_path / "bomb.png", 13000)
    assert bomb.stat().st_size < 100_000
    good = sorted((tiny_data / "red_disc").iterdir())[0]
    with caplog.at_level("INFO", logger="labtf.predict"):
        proc = _cli("predict", tiny_run, bomb, good)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "13000x13000 px (169 MP), more than the 40 MP" in proc.stderr
    assert str(good) in proc.stdout                 # the rest of the batch is still predicted
    assert "loading the model in" in caplog.text  # no silent start-up


def test_lambda_model_is_refused_in_one_line(tiny_run, tmp_path):
    import shutil

    import keras

    run = tmp_path / "evil"
    shutil.copytree(tiny_run, run)
    inp = keras.Input((64, 64, 3))
    out = keras.layers.Lambda(lambda x: x * 2.0)(inp)
    keras.Model(inp, out).save(run / "model.keras")
    img = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 10, 10)).save(img)
    proc = _cli("predict", run, img)
    _one_line_error(proc, "cannot be loaded safely")
    assert "Lambda" in proc.stderr


def _zip_bomb(path: Path, mb: int) -> Path:
    from test_torch_pickle import _entries, _state_dict_pickle

    obj = _state_dict_pickle({"w": _entries(False)["conv.weight"]})
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("archive/data.pkl", obj)
        zf.writestr("archive/byteorder", "little")
        with zf.open("archive/data/0", "w", force_zip64=True) as fh:
            block = bytes(1 << 20)
            for _ in range(mb):
                fh.write(block)
    return path


def test_pth_zip_bomb_is_refused_before_inflating(tmp_path):
    import tracemalloc

    from labtf.backbones.torch_pickle import load_state_dict

    bomb = _zip_bomb(tmp_path / "bomb.pth", 300)
    assert bomb.stat().st_size < 1_000_000
    tracemalloc.start()
    t = time.perf_counter()
    with pytest.raises(LabtfError, match="unpack to 315 MB.*zip bomb"):
        load_state_dict(bomb)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20e6 and time.perf_counter() - t < 2


def test_legacy_pth_claiming_a_huge_storage_is_refused(tmp_path):
    import struct
    import tracemalloc

    from test_torch_pickle import _legacy_file, _state_dict_pickle, _tensor

    from labtf.backbones.torch_pickle import load_state_dict

    # the pickle and the count say storage 0 holds 2**27 floats (512 MB); the file holds 12
    claimed = 1 << 27
    entry = _tensor("FloatStorage", "0", claimed, 0, (2, 3, 2), (6, 2, 1), True)
    path = _legacy_file(tmp_path / "huge.pth", _state_dict_pickle({"w": entry}),
                        {"0": np.arange(12, dtype=np.float32)})
    raw = path.read_bytes()
    path.write_bytes(raw.replace(struct.pack("<q", 12), struct.pack("<q", claimed), 1))
    tracemalloc.start()
    with pytest.raises(LabtfError, match="storage 0 is truncated"):
        load_state_dict(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20e6


def test_native_converter_lines_are_dropped_but_real_ones_kept(tmp_path):
    """quiet_native drops the TF-Lite C++ notices from fd 2 and keeps every other line."""
    import subprocess
    import sys

    code = ("import os, logging; logging.basicConfig(level=logging.INFO)\n"
            "from labtf.quiet_stderr import quiet_native\n"
            "with quiet_native():\n"
            "    os.write(2, b'INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n')\n"
            "    os.write(2, b'fully_quantize: 0, inference_type: 6, input_inference_type: FLOAT32,"
            " output_inference_type: FLOAT32\\n')\n"
            "    os.write(2, b'W0000 00:00:1796107610.908826    8759 tf_tfl_flatbuffer_helpers.cc:365]"
            " Ignored output_format.\\n')\n"
            "    os.write(2, b'a real problem\\n')\n")
    root = str(Path(__file__).resolve().parent.parent)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root,
                         env={**os.environ, "PYTHONPATH": root}, timeout=60)
    assert out.stderr == "a real problem\n", out.stderr
    verbose = subprocess.run([sys.executable, "-c", code.replace("logging.INFO", "logging.DEBUG")],
                             capture_output=True, text=True, cwd=root,
                             env={**os.environ, "PYTHONPATH": root}, timeout=60)
    assert "XNNPACK" in verbose.stderr and "a real problem" in verbose.stderr
