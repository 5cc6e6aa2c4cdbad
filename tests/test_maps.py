"""labtf.maps: the numpy-only map helpers (the one map normaliser), against values worked out by hand."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from labtf.maps import normalize_maps, pearson_r


def test_normalize_maps_relu_then_per_map_peak():
    cam = np.array([[[-2.0, 1.0], [2.0, 4.0]],      # negatives cut, then / 4
                    [[0.0, 0.0], [0.0, 0.0]],       # all zero stays zero
                    [[-1.0, -3.0], [-0.5, -2.0]],   # all negative -> zero
                    [[3e-6, 0.0], [6e-6, 0.0]]])  # a small positive peak still scales to 1
    got = normalize_maps(cam)
    assert got.dtype == np.float32 and got.shape == (4, 2, 2)
    np.testing.assert_allclose(got[0], [[0, 0.25], [0.5, 1.0]])
    np.testing.assert_array_equal(got[1], 0)
    np.testing.assert_array_equal(got[2], 0)
    np.testing.assert_allclose(got[3], [[0.5, 0], [1, 0]], rtol=1e-5)
    # the default is floor="zero" (what the artifact predictors call it with)
    np.testing.assert_array_equal(got, normalize_maps(cam, floor="zero"))


def test_normalize_maps_min_floor_is_per_map_min_max():
    maps = np.array([[[2.0, 4.0], [6.0, 10.0]],     # (x - 2) / 8
                     [[-3.0, -1.0], [-2.0, 1.0]],   # negatives kept: (x + 3) / 4
                     [[5.0, 5.0], [5.0, 5.0]],      # constant -> 0
                     [[0.0, 0.0], [0.0, 0.0]]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 0 / 0 on the constant maps
        got = normalize_maps(maps, floor="min")
    assert got.dtype == np.float32 and got.shape == (4, 2, 2)
    np.testing.assert_allclose(got[0], [[0, 0.25], [0.5, 1.0]])
    np.testing.assert_allclose(got[1], [[0, 0.5], [0.25, 1.0]])
    np.testing.assert_array_equal(got[2:], 0)
    # a constant positive map: 0 with floor="min", 1 with floor="zero" (its peak)
    np.testing.assert_array_equal(normalize_maps(maps[2:3], floor="zero"), 1)


def test_normalize_maps_nan_dtype_and_shape():
    cam = np.array([[[np.nan, 2.0], [1.0, 4.0]]])
    for floor in ("zero", "min"):  # NaN counts as 0; the rest is still scaled
        np.testing.assert_allclose(normalize_maps(cam, floor=floor), [[[0, 0.5], [0.25, 1.0]]])
    ints = np.array([[[0, 3], [6, 12]]], np.uint8)
    got = normalize_maps(ints)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, [[[0, 0.25], [0.5, 1.0]]])
    rgb = np.arange(2 * 2 * 2 * 3, dtype=np.float64).reshape(2, 2, 2, 3)  # any map rank
    got = normalize_maps(rgb, floor="min")
    assert got.shape == rgb.shape and got.reshape(2, -1).min(1).tolist() == [0, 0]
    np.testing.assert_allclose(got.reshape(2, -1).max(1), 1)
    tiny = np.array([[[1e-38, 0.0]]], np.float32)  # a peak near float32's smallest normal
    np.testing.assert_allclose(normalize_maps(tiny), [[[1.0, 0.0]]])
    with pytest.raises(ValueError, match="choose one of: min, zero"):
        normalize_maps(cam, floor="max")


def test_normalize_maps_float32_division_as_before():
    """The zero floor divides in float64 and rounds to float32: the same bits as the
    float32 division the artifact predictors used before (division is correctly
    rounded either way)."""
    rng = np.random.default_rng(3)
    cam = (rng.standard_normal((8, 7, 7)) * 10.0 ** rng.integers(-6, 6, (8, 1, 1))).astype(np.float32)
    relu = np.maximum(cam, np.float32(0))
    peak = relu.max(axis=(1, 2), keepdims=True)
    old = np.where(peak > 0, relu / np.maximum(peak, np.float32(1e-30)), 0).astype(np.float32)
    np.testing.assert_array_equal(normalize_maps(cam), old)


def test_pearson_r_by_hand():
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert pearson_r(a, a) == pytest.approx(1.0)
    assert pearson_r(a, 10 - 3 * a) == pytest.approx(-1.0)
    b = np.array([[2.0, 1.0], [4.0, 3.0]])
    # centred: a (-1.5,-.5,.5,1.5), b (-.5,-1.5,1.5,.5): sum ab = 3, |a|^2 = |b|^2 = 5
    assert pearson_r(a, b) == pytest.approx(3 / 5)
    assert pearson_r(a * 1e-3, b * 1e-3) == pytest.approx(3 / 5)  # faint maps: still a number
    rng = np.random.default_rng(0)
    x, y = rng.random(50), rng.random(50)
    assert pearson_r(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # constant maps: NaN by the guard, not by 0 / 0
        assert np.isnan(pearson_r(np.ones(4), np.arange(4.0)))
        assert np.isnan(pearson_r(np.arange(4.0), np.zeros(4)))
