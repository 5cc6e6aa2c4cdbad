"""Tests for labtf.backbones.classic (AlexNet, GoogLeNet)."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from labtf.backbones.classic import build_alexnet, build_googlenet  # noqa: E402


def _trainable(model: keras.Model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def _check_forward(model: keras.Model, side: int, channels: int) -> None:
    assert len(model.output.shape) == 4
    top = model.get_layer("top_activation")
    assert top is model.layers[-1]
    x = np.random.default_rng(0).random((2, side, side, 3), dtype=np.float32)
    y = keras.ops.convert_to_numpy(model(x, training=False))
    assert y.ndim == 4 and y.shape[0] == 2 and y.shape[-1] == channels
    assert np.all(np.isfinite(y))


def test_alexnet_params_and_forward() -> None:
    model = build_alexnet(input_shape=(None, None, 3))
    assert model.count_params() == 2_469_696
    assert _trainable(model) == 2_469_696
    _check_forward(model, 67, 256)
    assert build_alexnet().output.shape[1:] == (13, 13, 256)


def test_alexnet_batchnorm_option() -> None:
    model = build_alexnet(input_shape=(64, 64, 3), use_batchnorm=True)
    assert _trainable(model) == 2_470_848
    assert model.get_layer("conv5_bn") is not None
    _check_forward(model, 64, 256)


def test_alexnet_too_small_and_weights() -> None:
    with pytest.raises(ValueError, match="too small"):
        build_alexnet(input_shape=(30, 30, 3))
    with pytest.raises(ValueError, match="weights=None"):
        build_alexnet(weights="imagenet")


def test_googlenet_params_and_forward() -> None:
    model = build_googlenet()
    assert model.output.shape[1:] == (7, 7, 1024)
    assert model.count_params() == 5_995_392
    assert _trainable(model) == 5_980_832
    names = {layer.name for layer in model.layers}
    for block in ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b"):
        assert f"inception_{block}_concat" in names
    assert not any("aux" in n for n in names)
    small = build_googlenet(input_shape=(64, 64, 3))
    small.set_weights(model.get_weights())  # same weights, any input size
    _check_forward(small, 64, 1024)


def test_googlenet_rejects_weights() -> None:
    with pytest.raises(ValueError, match="weights=None"):
        build_googlenet(weights="imagenet")
