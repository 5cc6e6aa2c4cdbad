"""Adaptive int8 rounding: weights on the converter's grid, closer outputs on unseen photos."""
from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
skimage_data = pytest.importorskip("skimage.data")

from exporters.int8_rounding import _folded, round_weights, targets  # noqa: E402

SIZE = 32


def _photos(n: int, seed: int) -> np.ndarray:
    """Random 128 px crops of scikit-image's photos, downsampled to 32 px (real pixels)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = [skimage_data.coffee(), skimage_data.chelsea(), skimage_data.astronaut()]
    out = []
    for i in range(n):
        img = photos[i % len(photos)]
        y, x = rng.integers(0, img.shape[0] - 128), rng.integers(0, img.shape[1] - 128)
        crop = Image.fromarray(img[y:y + 128, x:x + 128]).resize((SIZE, SIZE), Image.BILINEAR)
        out.append(np.asarray(crop, np.float32))
    return np.stack(out)


def _net(seed: int = 0):
    """Stem conv + BN + ReLU6, depthwise + BN + ReLU6, 1x1 conv with bias, GAP, Dense.

    Batch-norm statistics are drawn with the spread of a trained network's (gains
    from about 0.3 to 20), which is what makes nearest rounding of folded weights costly.
    """
    from keras import layers

    keras.utils.set_random_seed(seed)
    inp = keras.Input((SIZE, SIZE, 3), name="image")
    x = layers.Rescaling(1 / 127.5, offset=-1.0)(inp)
    x = layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="stem")(x)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu")(x)
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    x = layers.BatchNormalization(name="dw_bn")(x)
    x = layers.ReLU(6.0, name="dw_relu")(x)
    x = layers.Conv2D(8, 1, name="proj")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inp, layers.Dense(4, name="logits")(x))
    rng = np.random.default_rng(seed)
    for bn in (model.get_layer("stem_bn"), model.get_layer("dw_bn")):
        c = bn.gamma.shape[0]
        bn.set_weights([rng.uniform(0.5, 2.0, c), rng.normal(1.0, 1.0, c),
                        rng.normal(0.0, 0.3, c), np.exp(rng.uniform(np.log(0.01), np.log(3.0), c))])
    return model


def _copy(model):
    clone = _net()
    clone.set_weights(model.get_weights())
    return clone


def _nearest(model) -> None:
    """What the converter does by itself: folded weights to the nearest grid point."""
    for t in targets(model):
        w, scale = _folded(t)
        step = np.abs(w).max(0) / 127
        q = np.round(w / np.where(step > 0, step, 1)) * step
        kernel = t.conv.get_weights()
        kernel[0] = (q / np.where(scale == 0, 1, scale)).reshape(kernel[0].shape)
        t.conv.set_weights(kernel)


def test_targets_of_efficientnet_lite0():
    """Every conv of the backbone, with the ReLU6 interval where one follows."""
    from labtf.backbones.efficientnet_lite import build_efficientnet_lite

    model = build_efficientnet_lite(0, (64, 64, 3))
    convs = [layer for layer in model.layers
             if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))]
    found = targets(model)
    assert [t.conv.name for t in found] == [c.name for c in convs]
    assert all(t.bn is not None and t.bn.name.endswith("bn") for t in found)
    clipped = {t.conv.name for t in found if t.clip == (0.0, 6.0)}
    projections = {c.name for c in convs if c.name.endswith("project_conv")}
    assert {t.conv.name for t in found} - clipped == projections


def test_targets_follow_the_graph_not_the_layer_list():
    """Branches (Inception-style), Activation('relu') and built-in ReLU are recognised."""
    from keras import layers

    inp = keras.Input((16, 16, 3))
    a = layers.Conv2D(4, 1, use_bias=False, name="a")(inp)
    b = layers.Conv2D(4, 3, padding="same", activation="relu", name="b")(inp)
    a = layers.BatchNormalization(name="a_bn")(a)
    a = layers.Activation("relu", name="a_relu")(a)
    c = layers.Conv2D(4, 1, name="c")(layers.Concatenate()([a, b]))
    d = layers.Conv2D(4, 1, name="d")(c)
    model = keras.Model(inp, layers.Add()([c, d]))
    found = {t.conv.name: (t.bn.name if t.bn else None, t.clip) for t in targets(model)}
    assert found == {"a": ("a_bn", (0.0, np.inf)), "b": (None, (0.0, np.inf)),
                     "c": (None, None), "d": (None, None)}
    with pytest.raises(ValueError, match="differ"):
        round_weights(model, _net(), np.zeros((1, 16, 16, 3), np.float32))


def test_weights_land_on_the_grid_one_neighbour_away():
    model, reference = _net(), _net()
    before = {t.conv.name: _folded(t)[0] for t in targets(model)}
    report = round_weights(model, reference, _photos(12, seed=0))
    assert [r["layer"] for r in report] == ["stem", "dw", "proj"]
    for t in targets(model):
        w, old = _folded(t)[0], before[t.conv.name]
        step = np.abs(old).max(0) / 127
        np.testing.assert_allclose(np.abs(w).max(0), np.abs(old).max(0), rtol=1e-5)
        units = w / step
        assert np.abs(units - np.round(units)).max() < 1e-3
        assert (np.abs(w - old) <= step * (1 + 1e-4)).all()
    stem = report[0]
    assert stem["adaptive"] < 0.5 * stem["nearest"], stem


def test_closer_to_float_than_nearest_on_unseen_photos():
    """Rounded on 12 crops, measured on 24 others: stem output and logits."""
    reference = _net()
    adaptive, nearest = _copy(reference), _copy(reference)
    round_weights(adaptive, reference, _photos(12, seed=0))
    _nearest(nearest)
    held_out = _photos(24, seed=1)

    def err(model, layer):
        probe = keras.Model(model.inputs, model.get_layer(layer).output)
        ref = keras.Model(reference.inputs, reference.get_layer(layer).output)
        return float(np.sqrt(np.mean((probe.predict(held_out, verbose=0)
                                      - ref.predict(held_out, verbose=0)) ** 2)))

    for layer in ("stem_relu", "logits"):
        assert err(adaptive, layer) < 0.7 * err(nearest, layer), layer


def test_flatbuffer_holds_the_chosen_integers():
    """The converter's own folding and rounding reproduce the adaptive choice exactly."""
    from ai_edge_litert.interpreter import Interpreter

    from exporters.tflite import convert

    reference = _net()
    model = _copy(reference)
    photos = _photos(12, seed=0)
    round_weights(model, reference, photos)
    flat = convert(model, SIZE, "int8", representative=photos)
    it = Interpreter(model_content=flat, experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    t = targets(model)[0]
    w, _ = _folded(t)
    expected = np.round(w / (np.abs(w).max(0) / 127)).T.reshape(16, 3, 3, 3)   # TF-Lite OHWI
    kernels = [d for d in it.get_tensor_details()
               if d["dtype"] == np.int8 and tuple(d["shape"]) == (16, 3, 3, 3)]
    assert len(kernels) == 1
    assert np.array_equal(it.get_tensor(kernels[0]["index"]), expected.astype(np.int8))
