"""Formats are plug-ins: one FORMATS entry is all a format needs (export, detect, open, options).

A toy format registered at run time goes end to end through the CLI; unknown options are
rejected with the valid ones listed, by export(), by every exporter and by the CLI.
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import cli
import exporters
from exporters import FORMATS, Format, Option, export
from labtf.errors import LabtfError
from labtf.predictor_base import Predictor


class ToyPredictor(Predictor):
    """Reads a ``.toy`` file; the top class is the image's brightest channel."""

    def __init__(self, path: Path) -> None:
        meta = json.loads(Path(path).read_text())
        self.classes, self.image_size, self.author = meta["classes"], meta["image_size"], meta["author"]

    def predict_batch(self, images: np.ndarray) -> np.ndarray:
        top = np.asarray(images, np.float64).mean(axis=(1, 2)).argmax(1) % len(self.classes)
        probs = np.full((len(images), len(self.classes)), 0.1 / (len(self.classes) - 1))
        probs[np.arange(len(images)), top] = 0.9
        return probs


def export_toy(run, path, *, quantize: str = "none", overwrite: bool = False,
               author: str = "nobody") -> Path:
    """Write ``<path>/model.toy``: the labels and the input size."""
    target = Path(path) / "model.toy"
    if target.exists() and not overwrite:
        raise LabtfError(f"{target} already exists; pass --overwrite to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({"classes": run.classes, "author": author, "quantize": quantize,
                                  "image_size": int(run.meta["image_size"])}))
    return target


TOY = Format("toy", export=export_toy, open=ToyPredictor,
             detect=lambda p: Path(p).is_file() and Path(p).suffix == ".toy",
             artifact="a .toy file", options={"author": Option("nobody", (str,), "who made it")},
             quantize=("none",), default_quantize="none", extra="", requires=(),
             description="a toy format for the plug-in test")


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(FORMATS, "toy", TOY)
    return TOY


def test_a_format_registered_at_run_time_goes_through_export_and_predict(toy, trained_run,
                                                                         shared_data, tmp_path):
    runner = CliRunner()
    res = runner.invoke(cli.main, ["export", str(trained_run.path), "--format", "toy", "--out",
                                   str(tmp_path), "--author", "me", "--no-parity"])
    assert res.exit_code == 0, res.output
    artifact = tmp_path / "model.toy"
    assert f"exported: {artifact}" in res.output
    assert json.loads(artifact.read_text())["author"] == "me"   # the CLI option reached it

    images = sorted(shared_data.rglob("*.png"))[:4]
    res = runner.invoke(cli.main, ["predict", str(artifact), *map(str, images)])
    assert res.exit_code == 0, res.output
    from labtf.images import load_rgb, to_square

    pred = ToyPredictor(artifact)
    lines = [line for line in res.output.splitlines() if "\t" in line]
    assert len(lines) == len(images)
    for line, image in zip(lines, images):
        x = to_square(load_rgb(image), pred.image_size, "crop")[None].astype(np.float32)
        label = trained_run.classes[int(pred.predict_batch(x)[0].argmax())]
        assert line == f'{image}\t"{label}": 0.90'
    assert "toy" in runner.invoke(cli.main, ["export", "--help"]).output


def test_cli_rejects_an_option_the_format_does_not_take(toy, trained_run, tmp_path):
    res = CliRunner().invoke(cli.main, ["export", str(trained_run.path), "--format", "toy",
                                        "--out", str(tmp_path), "--io-type", "uint8"])
    assert res.exit_code == 2
    assert res.output.strip() == ("error: --io-type does not apply to --format toy; "
                                  "its options: --quantize, --author")
    assert not (tmp_path / "model.toy").exists()


@pytest.mark.parametrize("argv,message", [
    (["--format", "onnx", "--io-type", "uint8"],
     "--io-type does not apply to --format onnx; its options: --quantize"),
    (["--format", "web", "--author", "me"], "--author does not apply to --format web; its "
     "options: --quantize, --calibration-images, --int8-rounding"),
    (["--format", "tflite", "--batching"], "--batching does not apply to --format tflite"),
    (["--format", "saved_model", "--no-classifier-twin"],
     "--classifier-twin does not apply to --format saved_model; its options: --quantize, "
     "--name, --version, --batching"),
])
def test_cli_option_for_another_format_is_one_error_line(argv, message, tmp_path):
    res = CliRunner().invoke(cli.main, ["export", str(tmp_path), *argv, "--out", str(tmp_path)])
    assert res.exit_code == 2, res.output
    assert message in res.output and len(res.output.strip().splitlines()) == 1


def test_export_rejects_an_unknown_option_listing_the_valid_ones(trained_run, tmp_path):
    with pytest.raises(LabtfError, match=r"^format onnx has no option 'opsett'; "
                                         r"valid options: opset$"):
        export(trained_run.path, "onnx", tmp_path, opsett=13)
    with pytest.raises(LabtfError, match="format tflite has no option 'io_typ'; valid options: "
                                         "io_type, calibration_images, int8_rounding"):
        export(trained_run.path, "tflite", tmp_path, io_typ="uint8")
    with pytest.raises(LabtfError, match="option 'calibration_images' takes int, not '5'"):
        export(trained_run.path, "tflite", tmp_path, calibration_images="5")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_every_exporter_rejects_unknown_options(fmt, trained_run, tmp_path):
    spec = FORMATS[fmt]
    with pytest.raises(LabtfError, match=rf"format {fmt} has no option 'no_such_option'; "
                                         rf"valid options: {', '.join(spec.options)}$"):
        spec.export(trained_run, tmp_path, no_such_option=1)
    # the schema is the exporter's signature: nothing accepted silently, nothing left out
    fn = inspect.unwrap(spec.export.resolve())
    params = inspect.signature(fn).parameters
    assert not any(p.kind is p.VAR_KEYWORD for p in params.values())
    assert set(list(params)[2:]) == {"quantize", "overwrite", *spec.options}
    for name, option in spec.options.items():
        assert params[name].default == option.default, (fmt, name)
    assert spec.default_quantize in spec.quantize


def test_importing_exporters_loads_no_format_module_and_no_tensorflow():
    import subprocess
    import sys

    code = ("import sys, exporters, cli; "
            "print(sorted(m for m in sys.modules if m.startswith(('exporters.', 'tensorflow', "
            "'keras'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parent.parent, check=True).stdout
    assert out.strip() == "[]"


def test_open_predictor_lists_every_kind(tmp_path):
    from labtf.predict import RUN_KIND, open_predictor

    junk = tmp_path / "notes.txt"
    junk.write_text("not a model")
    with pytest.raises(LabtfError) as info:
        open_predictor(junk)
    message = str(info.value)
    assert message.startswith(f"{junk} is not something labtf can predict with; expected "
                              f"{RUN_KIND}; ")
    for spec in FORMATS.values():
        assert spec.artifact in message


def test_require_names_the_extra(monkeypatch):
    import importlib

    real = importlib.import_module
    monkeypatch.setattr(importlib, "import_module", lambda n, *a, **k: (
        (_ for _ in ()).throw(ImportError(n)) if n == "onnxruntime" else real(n, *a, **k)))
    with pytest.raises(LabtfError, match=r"^an .onnx model needs the 'onnxruntime' package, which "
                                         r"is not installed; pip install 'labtf\[onnx\]'$"):
        exporters.require("onnxruntime", extra="onnx", what="an .onnx model")
    with pytest.raises(LabtfError, match=r"pip install onnxruntime$"):
        exporters.require("onnxruntime", extra="", what="x")
    assert exporters.require("json", extra="", what="x") is real("json")
