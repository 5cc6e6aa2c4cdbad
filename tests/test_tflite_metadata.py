"""TFLite Metadata: writer/reader round trip, old artifacts, MediaPipe Tasks on labtf exports."""
from __future__ import annotations

import importlib.util
import io
import json
import zipfile

import numpy as np
import pytest

from labtf.errors import LabtfError

NO_MEDIAPIPE = importlib.util.find_spec("mediapipe") is None
MP_REASON = "mediapipe is not installed (pip install 'labtf[mediapipe]')"


def _tiny_tflite(with_cam: bool = True, size: int = 16) -> bytes:
    """A 3-class float model with labtf's signature names (no Keras, converts in ~1 s)."""
    import tensorflow as tf

    weights = tf.constant(np.array([[4, 0, 0], [0, 4, 0], [0, 0, 4]], np.float32))

    class Tiny(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32, name="image")])
        def serve(self, image):
            probs = tf.nn.softmax(tf.matmul(tf.reduce_mean(image, axis=[1, 2]) / 255.0, weights))
            out = {"probabilities": probs}
            if with_cam:
                out["cam"] = tf.reduce_mean(image, axis=-1)[:, ::4, ::4] / 255.0
            return out

    m = Tiny()
    conv = tf.lite.TFLiteConverter.from_concrete_functions([m.serve.get_concrete_function()], m)
    return conv.convert()


@pytest.fixture(scope="module")
def tiny():
    pytest.importorskip("tensorflow")
    return {True: _tiny_tflite(True), False: _tiny_tflite(False)}


def _write(flat: bytes, **kw) -> bytes:
    from exporters.tflite_metadata import write_metadata

    args = dict(labels=["red", "green", "blue"], name="tiny", version="3", author="lab",
                license="Apache-2.0", description="three colours",
                output_descriptions={"probabilities": "softmax"},
                extra_files={"labtf.json": b'{"image_size": 16}\n'})
    args.update(kw)
    return write_metadata(flat, **args)


def test_round_trip_reads_every_field(tiny):
    from exporters.tflite_metadata import TENSOR_AXIS_LABELS, read_metadata

    md = read_metadata(_write(tiny[True]))
    assert (md.name, md.version, md.author, md.license, md.description) == (
        "tiny", "3", "lab", "Apache-2.0", "three colours")
    assert md.min_parser_version == "1.0.0"
    (inp,) = md.inputs
    assert (inp.name, inp.color_space, inp.image_size) == ("image", "RGB", (16, 16))
    assert (inp.mean, inp.std, inp.value_range) == ([0.0], [1.0], (0.0, 255.0))
    outs = {o.name: o for o in md.outputs}
    assert set(outs) == {"probabilities", "cam"}
    assert outs["probabilities"].files == [("labels.txt", TENSOR_AXIS_LABELS)]
    assert outs["probabilities"].description == "softmax" and outs["cam"].files == []
    assert md.labels == ["red", "green", "blue"]
    assert md.model_files == [("labtf.json", 0)]
    assert json.loads(md.files["labtf.json"]) == {"image_size": 16}


def test_output_metadata_follows_subgraph_output_order(tiny):
    """MediaPipe matches output metadata to SubGraph.outputs by position."""
    from tensorflow.lite.python import schema_py_generated as schema

    from exporters.tflite_metadata import read_metadata

    data = _write(tiny[True])
    model = schema.Model.GetRootAs(data, 0)
    graph, sig = model.Subgraphs(0), model.SignatureDefs(0)
    by_index = {sig.Outputs(i).TensorIndex(): sig.Outputs(i).Name().decode()
                for i in range(sig.OutputsLength())}
    order = [by_index[graph.Outputs(i)] for i in range(graph.OutputsLength())]
    assert [o.name for o in read_metadata(data).outputs] == order


def test_zip_is_stored_and_model_still_runs(tiny):
    from ai_edge_litert.interpreter import Interpreter

    plain, data = tiny[True], _write(tiny[True])
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert {i.filename: i.compress_type for i in zf.infolist()} == {
            "labels.txt": zipfile.ZIP_STORED, "labtf.json": zipfile.ZIP_STORED}
    x = np.random.default_rng(0).uniform(0, 255, (1, 16, 16, 3)).astype(np.float32)
    before = Interpreter(model_content=plain).get_signature_runner()(image=x)
    after = Interpreter(model_content=data).get_signature_runner()(image=x)
    np.testing.assert_array_equal(before["probabilities"], after["probabilities"])
    np.testing.assert_array_equal(before["cam"], after["cam"])


def test_rewriting_replaces_metadata_and_files(tiny):
    from tensorflow.lite.python import schema_py_generated as schema

    from exporters.tflite_metadata import read_metadata

    data = _write(_write(tiny[True]), labels=["a", "b", "c"], extra_files={})
    model = schema.Model.GetRootAs(data, 0)
    names = [model.Metadata(i).Name().decode() for i in range(model.MetadataLength())]
    assert names.count("TFLITE_METADATA") == 1
    md = read_metadata(data)
    assert md.labels == ["a", "b", "c"] and set(md.files) == {"labels.txt"}


def test_single_output_gets_the_labels_and_bad_inputs_are_refused(tiny):
    from exporters.tflite_metadata import read_metadata

    md = read_metadata(_write(tiny[False], label_output="scores"))
    assert [o.name for o in md.outputs] == ["probabilities"] and md.labels[0] == "red"
    with pytest.raises(LabtfError, match="no output 'scores'.*probabilities, cam|"
                                         "no output 'scores'.*cam, probabilities"):
        _write(tiny[True], label_output="scores")
    with pytest.raises(LabtfError, match="not a TF-Lite flatbuffer"):
        _write(b"PK\x03\x04 not a model")
    assert read_metadata(tiny[True]) is None        # a model without metadata


def test_old_artifacts_with_a_plain_zip_still_read(tiny, tmp_path):
    """Before the metadata, labtf appended a deflated zip; read_embedded keeps reading it."""
    from exporters.tflite import read_embedded

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("labels.txt", "red\ngreen\nblue\n")
        zf.writestr("labtf.json", json.dumps({"image_size": 16, "resize": "pad"}))
    old = tmp_path / "old.tflite"
    old.write_bytes(tiny[True] + buf.getvalue())
    meta = read_embedded(old)
    assert meta["classes"] == ["red", "green", "blue"] and meta["resize"] == "pad"
    new = tmp_path / "new.tflite"
    new.write_bytes(_write(tiny[True], labels=["x", "y", "z"]))
    assert read_embedded(new)["classes"] == ["x", "y", "z"]
    bare = tmp_path / "bare.tflite"
    bare.write_bytes(tiny[True])
    with pytest.raises(LabtfError, match="no labels embedded"):
        read_embedded(bare)


@pytest.mark.skipif(NO_MEDIAPIPE, reason=MP_REASON)
def test_mediapipe_needs_the_metadata_and_reads_the_names(tiny, tmp_path):
    from exporters.mediapipe_run import classify

    images = np.zeros((3, 16, 16, 3), np.uint8)
    for i in range(3):
        images[i, ..., i] = 250
    bare = tmp_path / "bare.tflite"
    bare.write_bytes(tiny[False])
    refused = classify(bare, images, timeout=300)
    assert not refused.loaded and "NormalizationOptions" in refused.error
    good = tmp_path / "good.tflite"
    good.write_bytes(_write(tiny[False]))
    res = classify(good, images, timeout=300)
    assert res.loaded, res.error
    assert [t[:2] for t in res.top] == [(0, "red"), (1, "green"), (2, "blue")]
    assert res.heads == ["probabilities"]


def test_export_writes_metadata_and_a_classifier_twin(trained_run, tmp_path, shared_data):
    pytest.importorskip("ai_edge_litert")
    from exporters import export
    from exporters.common import load_images, split_samples
    from exporters.tflite_metadata import read_metadata
    from labtf.predict import open_predictor

    path = export(trained_run.path, "tflite", tmp_path, license="CC0-1.0", version=4)
    twin = tmp_path / "model_fp32_classifier.tflite"
    assert path.name == "model_fp32.tflite" and twin.is_file()
    md, md_twin = read_metadata(path), read_metadata(twin)
    assert md.labels == md_twin.labels == trained_run.classes
    assert (md.license, md.version, md.author) == ("CC0-1.0", "4", "labtf")
    assert sorted(o.name for o in md.outputs) == ["cam", "probabilities"]
    assert [o.name for o in md_twin.outputs] == ["probabilities"]
    assert json.loads(md.files["labtf.json"])["with_cam"] is True
    assert json.loads(md_twin.files["labtf.json"])["with_cam"] is False
    cam_pred, twin_pred = open_predictor(path), open_predictor(twin)
    assert cam_pred.has_cam and not twin_pred.has_cam
    samples = split_samples(trained_run, "test")
    images, _ = load_images(samples, 64, trained_run.meta.get("resize", "crop"))
    np.testing.assert_allclose(twin_pred.predict_batch(images), cam_pred.predict_batch(images),
                               atol=1e-6)
    if NO_MEDIAPIPE:
        return
    from exporters.mediapipe_run import classify

    res = classify(twin, images.astype(np.uint8), timeout=300)
    assert res.loaded, res.error
    assert all(trained_run.classes[i] == name for i, name, _ in res.top)
    top = twin_pred.predict_batch(images).argmax(1)
    assert [i for i, _, _ in res.top] == list(top)
