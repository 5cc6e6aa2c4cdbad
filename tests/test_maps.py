"""labtf.maps: the numpy-only map helpers, against values worked out by hand."""
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
