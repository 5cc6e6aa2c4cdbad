"""Exporters: every FORMATS entry round-trips against Keras (numbers, CAM, labels, errors)."""
from __future__ import annotations

import configparser
import importlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from exporters import FORMATS, export
from labtf.errors import LabtfError

ROOT = Path(__file__).resolve().parent.parent

#: (format, quantize) cases from the one table; fp32 ones must match Keras to 1e-4.
CASES = [(f.name, q) for f in FORMATS.values() for q in f.quantize if f.name != "web"]  # test_web.py
TOL = {"none": 1e-4, "float16": 2e-2}


def _missing(fmt: str) -> str | None:
    spec = FORMATS[fmt]
    for mod in spec.requires + spec.runtime_requires:
        try:
            importlib.import_module(mod)
        except ImportError:
            return f"{fmt} needs '{mod}' (pip install 'labtf[{spec.extra}]'); not installable here"
    return None


@pytest.fixture(scope="module")
def reference(trained_run):
    """Keras probabilities and Grad-CAM on the tiny run's test split."""
    from exporters.parity import reference as make_reference

    return make_reference(trained_run, latency_runs=2)


@pytest.fixture(scope="module")
def artifacts(trained_run, tmp_path_factory):
    """Exports made once per (format, quantize), on demand."""
    out = tmp_path_factory.mktemp("exports")
    made: dict = {}

    def get(fmt: str, quantize: str) -> Path:
        if (fmt, quantize) not in made:
            opts = {"calibration_images": 16} if quantize == "int8" else {}
            made[fmt, quantize] = export(trained_run.path, fmt, out, quantize=quantize, **opts)
        return made[fmt, quantize]

    get.out = out
    return get


def test_formats_table_is_consistent():
    extras = configparser.ConfigParser()
    extras.read(ROOT / "setup.cfg")
    declared = set(extras["options.extras_require"])
    for name, spec in FORMATS.items():
        assert all(callable(f) for f in (spec.export, spec.open, spec.detect)), name
        assert callable(spec.export.resolve()) and callable(spec.open.resolve()), name
        assert spec.quantize, name
        assert not spec.extra or spec.extra in declared, f"{name}: extra '{spec.extra}' missing"


@pytest.mark.parametrize("fmt,quantize", CASES)
def test_round_trip_matches_keras(fmt, quantize, artifacts, reference):
    from labtf.predict import open_predictor

    reason = _missing(fmt)
    if reason:
        pytest.skip(reason)
    pred = open_predictor(artifacts(fmt, quantize))
    assert pred.has_cam and pred.classes and pred.image_size == reference.images.shape[1]
    probs, cam = pred.predict_batch_with_cam(reference.images)
    assert probs.shape == reference.probs.shape
    assert cam.shape == reference.grad_cam.shape
    assert cam.min() >= -1e-3 and cam.max() <= 1 + 1e-2
    if quantize in TOL:
        assert np.abs(probs - reference.probs).max() <= TOL[quantize]
    else:  # int8 of the tiny model: valid distributions, close to Keras' (near-uniform) ones
        np.testing.assert_allclose(probs.sum(1), 1.0, atol=0.05)
        assert np.abs(probs - reference.probs).max() <= 0.05
    if quantize == "none":
        from labtf.maps import pearson_r

        rs = [pearson_r(a, b) for a, b in zip(cam, reference.grad_cam)]
        rs = [r for r in rs if not np.isnan(r)]
        assert rs and min(rs) >= 0.99


def test_keras_cam_equals_grad_cam(trained_run, reference):
    from labtf.maps import pearson_r
    from labtf.predict import open_predictor

    _, cam = open_predictor(trained_run.path).predict_batch_with_cam(reference.images)
    both = [(a, b) for a, b in zip(cam, reference.grad_cam) if b.max() > 0]
    assert both
    for a, b in both:
        assert pearson_r(a, b) > 0.999
        np.testing.assert_allclose(a, b, atol=1e-3)


def test_tflite_labels_are_embedded(trained_run, artifacts):
    pytest.importorskip("ai_edge_litert")
    from exporters.tflite import read_embedded

    path = artifacts("tflite", "none")
    with zipfile.ZipFile(path) as zf:
        assert zf.read("labels.txt").decode().split() == trained_run.classes
    meta = read_embedded(path)
    assert meta["classes"] == trained_run.classes and meta["image_size"] == 64


def test_tflite_uint8_io(trained_run, tmp_path, reference):
    pytest.importorskip("ai_edge_litert")
    from labtf.predict import open_predictor

    # uint8 I/O is what this checks: the converter's rounding and no twin keep it quick
    path = export(trained_run.path, "tflite", tmp_path, quantize="int8", io_type="uint8",
                  calibration_images=8, int8_rounding="nearest", classifier_twin=False)
    pred = open_predictor(path)
    assert pred.inputs["image"]["dtype"] == np.uint8
    probs, cam = pred.predict_batch_with_cam(reference.images[:2])
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=0.05)
    assert np.abs(probs - reference.probs[:2]).max() <= 0.05
    assert cam.shape == reference.grad_cam[:2].shape


@pytest.fixture(scope="module")
def decisive_run(trained_run, tmp_path_factory):
    """A copy of the tiny run whose class layer is re-drawn so the three classes get clearly
    different, input-dependent probabilities (the tiny run's are ~1/3 each): class order and
    int8 error become visible."""
    import shutil

    from labtf.model import LOGITS
    from labtf.run import Run

    dest = tmp_path_factory.mktemp("decisive") / "run"
    shutil.copytree(trained_run.path, dest)
    run = Run(dest)
    model = run.load_model()
    dense = model.get_layer(LOGITS)
    kernel, bias = dense.get_weights()
    rng = np.random.default_rng(0)
    kernel = rng.normal(0, 3.0 / np.sqrt(kernel.shape[0]), kernel.shape).astype(np.float32)
    dense.set_weights([kernel, np.array([0.0, 1.0, 2.0], np.float32)])
    (dest / "model.keras").unlink()
    model.save(dest / "model.keras")
    return run


def test_int8_tflite_agrees_with_keras_top1_and_probabilities(decisive_run, tmp_path):
    pytest.importorskip("ai_edge_litert")
    from exporters.parity import reference as make_reference
    from labtf.predict import open_predictor

    ref = make_reference(decisive_run, latency_runs=1)
    # order matters here: reversed, every image's top class and probabilities change
    assert np.abs(ref.probs - ref.probs[:, ::-1]).max(axis=1).min() > 0.2
    assert (ref.probs.argmax(1) != ref.probs[:, ::-1].argmax(1)).all()
    for io_type in ("float32", "uint8"):
        path = export(decisive_run.path, "tflite", tmp_path / io_type, quantize="int8",
                      io_type=io_type, calibration_images=8, int8_rounding="nearest",
                      classifier_twin=False)
        probs, _ = open_predictor(path).predict_batch_with_cam(ref.images)
        agree = (probs.argmax(1) == ref.probs.argmax(1)).mean()
        assert agree >= 0.9, (io_type, agree)
        assert np.abs(probs - ref.probs).max() <= 0.1, io_type


def test_saved_model_signatures_and_bytes(trained_run, artifacts, reference, shared_data):
    from labtf.images import load_rgb, to_square
    from labtf.predict import open_predictor

    folder = artifacts("saved_model", "none")
    assert folder.name == "1" and (folder / "saved_model.pb").is_file()
    pred = open_predictor(folder.parent.parent)  # <base> works too
    assert set(pred.loaded.signatures) == {"serving_default", "serving_pixels"}
    files = sorted(shared_data.rglob("*.*"))[:6]   # PNG and JPEG
    out = pred.predict_bytes([f.read_bytes() for f in files])
    assert set(out) == {"probabilities", "class_index", "label", "cam"}
    pix = np.stack([to_square(load_rgb(f), 64, pred.resize) for f in files]).astype(np.float32)
    probs = pred.predict_batch(pix)
    assert np.abs(out["probabilities"] - probs).max() < 0.02
    assert [x.decode() for x in out["label"]] == [trained_run.classes[i] for i in out["class_index"]]


def test_in_graph_resize_matches_pillow():
    import tensorflow as tf

    from exporters.saved_model import square_in_graph
    from labtf.images import to_square

    rng = np.random.default_rng(1)
    for shape in [(48, 80, 3), (90, 50, 3), (30, 30, 3)]:
        rgb = (rng.random(shape) * 255).astype(np.uint8)
        for mode in ("crop", "pad", "squash"):
            ref = to_square(rgb, 64, mode).astype(np.float32)
            got = square_in_graph(tf.constant(rgb), 64, mode).numpy()
            assert got.shape == ref.shape
            assert np.abs(got - ref).mean() < 1.5, (shape, mode)
            # as traced into the serving signature (graph mode), not only eagerly
            traced = tf.function(lambda x, m=mode: square_in_graph(x, 64, m))
            np.testing.assert_allclose(traced(tf.constant(rgb)).numpy(), got, atol=1e-4)


def test_parity_report_files(artifacts, reference):
    from exporters.parity import parity_report, write_parity

    reason = _missing("onnx")
    if reason:
        pytest.skip(reason)
    report = parity_report(artifacts("onnx", "none"), reference, latency_runs=2)
    assert report["max_abs_diff"] <= 1e-4 and report["top1_agreement"] == 1.0
    assert report["size_bytes"] > 0 and report["latency_ms"] > 0
    path = write_parity(artifacts.out, report)
    assert "model.onnx" in json.loads(path.read_text())["reports"]
    assert "| model.onnx |" in (artifacts.out / "parity.md").read_text()


def test_missing_run_and_unknown_options(tmp_path, trained_run):
    with pytest.raises(LabtfError, match="does not exist"):
        export(tmp_path / "nope", "onnx", tmp_path)
    with pytest.raises(LabtfError, match="unknown export format 'coreml'"):
        export(trained_run.path, "coreml", tmp_path)
    with pytest.raises(LabtfError, match="takes --quantize"):
        export(trained_run.path, "onnx", tmp_path, quantize="int8")


@pytest.mark.parametrize("fmt", [f for f in FORMATS if FORMATS[f].extra])
def test_extra_not_installed_is_one_line(fmt, trained_run, tmp_path, monkeypatch):
    real = importlib.import_module
    missing = FORMATS[fmt].requires[0]

    def fake(name, *args, **kwargs):
        if name == missing:
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", fake)
    quantize = FORMATS[fmt].quantize[0]
    with pytest.raises(LabtfError, match=rf"pip install 'labtf\[{FORMATS[fmt].extra}\]'") as info:
        export(trained_run.path, fmt, tmp_path, quantize=quantize)
    assert "\n" not in str(info.value)


def test_runtime_not_installed(artifacts, monkeypatch):
    from labtf.predict import open_predictor

    if _missing("onnx"):
        pytest.skip(_missing("onnx"))
    path = artifacts("onnx", "none")
    real = importlib.import_module
    monkeypatch.setattr(importlib, "import_module", lambda n, *a, **k: (
        (_ for _ in ()).throw(ImportError(n)) if n == "onnxruntime" else real(n, *a, **k)))
    with pytest.raises(LabtfError, match=r"pip install 'labtf\[onnx\]'"):
        open_predictor(path)


def test_existing_artifact_is_not_overwritten(trained_run, artifacts):
    if _missing("onnx"):
        pytest.skip(_missing("onnx"))
    path = artifacts("onnx", "none")
    with pytest.raises(LabtfError, match="already exists; pass --overwrite"):
        export(trained_run.path, "onnx", artifacts.out)
    before = path.stat().st_mtime_ns
    assert export(trained_run.path, "onnx", artifacts.out, overwrite=True) == path
    assert path.stat().st_mtime_ns >= before
    artifacts("saved_model", "none")
    with pytest.raises(LabtfError, match="already exists"):
        export(trained_run.path, "saved_model", artifacts.out)


def test_predict_with_corrupt_image_and_saliency(artifacts, shared_data, tmp_path, trained_run):
    from click.testing import CliRunner

    import cli

    if _missing("tflite"):
        pytest.skip(_missing("tflite"))
    good = sorted(shared_data.rglob("*.png"))[:2]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    res = CliRunner().invoke(cli.main, ["predict", str(artifacts("tflite", "none")), str(good[0]),
                                        str(bad), str(good[1]), "--saliency", str(tmp_path / "sal")])
    assert res.exit_code == 1, res.output
    assert "broken.jpg" in res.output and "1 of 3 image(s)" in res.output
    pngs = sorted((tmp_path / "sal").glob("*_cam.png"))
    assert [p.name for p in pngs] == sorted(f"{g.stem}_cam.png" for g in good)
    from PIL import Image

    from labtf.images import load_rgb, to_square

    meta = trained_run.meta
    for png, src in zip(pngs, sorted(good)):
        overlay = np.asarray(Image.open(png).convert("RGB"), np.float64)
        # the map is drawn over the picture as the model saw it (its input size and resize)
        orig = to_square(load_rgb(src), int(meta["image_size"]), meta.get("resize", "crop"))
        orig = orig.astype(np.float64)
        assert overlay.shape[:2] == orig.shape[:2] and overlay.std() > 5
        assert 0 < np.abs(overlay - orig).mean()  # the CAM is drawn over the picture
    assert sum(g.name in res.output for g in good) == 2


def test_cli_export_and_benchmark(trained_run, tmp_path, reference):
    from click.testing import CliRunner

    import cli

    if _missing("onnx"):
        pytest.skip(_missing("onnx"))
    res = CliRunner().invoke(cli.main, ["export", str(trained_run.path), "--format", "onnx",
                                        "--out", str(tmp_path), "--no-parity"])
    assert res.exit_code == 0, res.output
    from labtf.predict import open_predictor

    probs = open_predictor(tmp_path / "model.onnx").predict_batch(reference.images)
    assert np.abs(probs - reference.probs).max() <= TOL["none"]
    res = CliRunner().invoke(cli.main, ["export", str(trained_run.path), "--format", "onnx",
                                        "--out", str(tmp_path), "--no-parity"])
    assert res.exit_code == 2 and "already exists" in res.output
    res = CliRunner().invoke(cli.main, ["benchmark", str(trained_run.path),
                                        str(tmp_path / "model.onnx"), "--runs", "2"])
    assert res.exit_code == 0, res.output
    assert "model.onnx" in res.output and "latency" in res.output
    rows = [line.split("|")[1:-1] for line in res.output.splitlines()
            if line.startswith("| ") and "model.onnx" in line or str(trained_run.path) + " |" in line]
    assert len(rows) == 2, res.output
    for cells in rows:      # latency ms (b=1), throughput img/s, size MB: positive numbers
        assert all(float(c) > 0 for c in cells[1:4]), res.output


def test_tensorrt_calibration_batches_feed_the_onnx_input(trained_run, artifacts):
    from exporters.common import load_images, split_samples
    from exporters.tensorrt import CalibrationBatches

    images, _ = load_images(split_samples(trained_run, "train", 20), 64, "crop")
    batches = CalibrationBatches(images, batch_size=8)
    got = list(batches)
    assert len(got) == len(batches) == 20 // 8
    assert all(b.shape == (8, 64, 64, 3) and b.dtype == np.float32 and b.flags.c_contiguous
               for b in got)
    assert 0 <= got[0].min() and got[0].max() <= 255
    with pytest.raises(LabtfError):
        CalibrationBatches(images[..., 0])
    if _missing("onnx"):
        return
    import onnx

    model = onnx.load(str(artifacts("onnx", "none")))
    (inp,) = model.graph.input
    dims = [d.dim_value or d.dim_param for d in inp.type.tensor_type.shape.dim]
    assert inp.name == "image" and dims[1:] == [64, 64, 3]
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert {o.name for o in model.graph.output} == {"probabilities", "cam"}


def test_tensorrt_engine_build_needs_gpu(trained_run, reference, tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT is not installable here (no NVIDIA GPU); "
                        "build with trtexec as in README")
    from labtf.predict import open_predictor

    path = export(trained_run.path, "tensorrt", tmp_path, quantize="float16")
    pred = open_predictor(path)
    assert pred.classes == trained_run.classes and pred.image_size == 64
    probs, cam = pred.predict_batch_with_cam(reference.images)
    assert np.abs(probs - reference.probs).max() <= TOL["float16"]
    assert (probs.argmax(1) == reference.probs.argmax(1)).mean() >= 0.9
    assert cam.shape == reference.grad_cam.shape


def test_cli_int8_calibration_images(trained_run, tmp_path, caplog, reference):
    import logging

    from click.testing import CliRunner

    import cli

    if _missing("tflite"):
        pytest.skip(_missing("tflite"))
    with caplog.at_level(logging.INFO, logger="exporters.tflite"):
        res = CliRunner().invoke(cli.main, ["export", str(trained_run.path), "--format", "tflite",
                                            "--quantize", "int8", "--calibration-images", "5",
                                            "--no-classifier-twin", "--out", str(tmp_path),
                                            "--no-parity"])
    assert res.exit_code == 0, res.output
    assert "int8 calibration on 5 train images" in caplog.text
    assert "int8 adaptive rounding on 5 calibration images" in caplog.text
    from exporters.tflite import read_embedded
    from labtf.predict import open_predictor

    assert read_embedded(tmp_path / "model_int8.tflite")["classes"] == trained_run.classes
    probs = open_predictor(tmp_path / "model_int8.tflite").predict_batch(reference.images)
    assert np.abs(probs - reference.probs).max() <= 0.05


def test_int8_rounding_choice_is_recorded_and_checked(trained_run, tmp_path, artifacts):
    pytest.importorskip("ai_edge_litert")
    from click.testing import CliRunner

    import cli
    from exporters.tflite import read_embedded

    assert read_embedded(artifacts("tflite", "int8"))["int8_rounding"] == "adaptive"
    assert read_embedded(artifacts("tflite", "none"))["int8_rounding"] is None
    res = CliRunner().invoke(cli.main, ["export", str(trained_run.path), "--format", "tflite",
                                        "--quantize", "int8", "--calibration-images", "4",
                                        "--int8-rounding", "nearest", "--no-classifier-twin",
                                        "--out", str(tmp_path), "--no-parity"])
    assert res.exit_code == 0, res.output
    assert read_embedded(tmp_path / "model_int8.tflite")["int8_rounding"] == "nearest"
    with pytest.raises(LabtfError, match="choose one of: adaptive, nearest"):
        export(trained_run.path, "tflite", tmp_path / "x", quantize="int8", int8_rounding="up")
