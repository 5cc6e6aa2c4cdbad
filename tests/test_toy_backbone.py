"""A backbone added at run time through the registry alone: listed, trained and used through the CLI.

This is the proof of docs/layout.md's "to add a backbone": one builder plus one
:class:`BackboneSpec` (a line of ``labtf/backbones/registry.py``, or ``register_backbone``).
"""
import re

import keras
import pytest
from click.testing import CliRunner

import cli
from labtf.backbones import BACKBONES, BackboneSpec, register_backbone
from labtf.backbones.inputs import backbone_inputs
from labtf.errors import LabtfError


def _toy(input_tensor, weights):
    """Two strided convolutions: a tiny feature model on the preprocessed input."""
    inputs, x = backbone_inputs((None, None, 3), input_tensor)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="toy_conv")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu", name="toy_top")(x)
    return keras.Model(inputs, x, name="toy")


@pytest.fixture
def toy():
    spec = register_backbone(BackboneSpec("toy", 32, "tf", "toy_top", "none", _toy, ("toy_conv",),
                                          summary="two convolutions (test)"))
    yield spec
    BACKBONES.pop("toy")


def _cli(*args):
    return CliRunner().invoke(cli.main, [str(a) for a in args])


def test_toy_backbone_trains_and_predicts_through_the_cli(toy, tiny_data, tmp_path):
    listing = _cli("backbones")
    assert re.search(r"^toy\s+32\s+tf\s+none\s+two convolutions \(test\)$", listing.output, re.M)
    run = tmp_path / "run"
    res = _cli("train", tiny_data, "--backbone", "toy", "--weights", "none", "--epochs", 1,
               "--fine-tune-epochs", 0, "--batch-size", 8, "--out", run)
    assert res.exit_code == 0, res.output
    assert (run / "model.keras").is_file()
    image = sorted((tiny_data / "red_disc").iterdir())[0]
    res = _cli("predict", run, image)
    assert res.exit_code == 0, res.output
    assert re.search(rf'^{re.escape(str(image))}\t"(blue_bar|green_square|red_disc)": [01]\.\d+',
                     res.output, re.M), res.output


def test_register_backbone_refuses_bad_specs(toy):
    with pytest.raises(LabtfError, match="'toy' is already registered"):
        register_backbone(toy)
    with pytest.raises(LabtfError, match="unknown preprocessing 'imagenet'; choose one of: none, tf"):
        register_backbone(BackboneSpec("toy2", 32, "imagenet", "", "none", _toy))
    with pytest.raises(LabtfError, match="unknown weight source 'hub'; choose one of: keras-download"):
        register_backbone(BackboneSpec("toy2", 32, "tf", "", "hub", _toy))
    assert "toy2" not in BACKBONES
