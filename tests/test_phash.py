"""labtf.curate.phash building blocks: hashes, packing, Hamming distances, union-find groups."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from labtf.curate.phash import (NearDuplicateThresholds, dhash_bits, group_pairs, hamming_matrix,
                                near_duplicate_pairs, pack64, phash_bits, signature)
from labtf.errors import LabtfError


def _ramp(width: int = 90, height: int = 80, rising: bool = True) -> Image.Image:
    row = np.linspace(0, 255, width) if rising else np.linspace(255, 0, width)
    return Image.fromarray(np.tile(row, (height, 1)).astype(np.uint8), "L")


def test_dhash_of_ramps_and_phash_invariances():
    assert dhash_bits(_ramp()).all() and len(dhash_bits(_ramp())) == 64
    assert not dhash_bits(_ramp(rising=False)).any()
    assert len(dhash_bits(_ramp(), hash_size=4)) == 16
    rng = np.random.default_rng(1)
    img = Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).resize((256, 256))
    bits = phash_bits(img)
    assert bits.dtype == bool and bits.shape == (64,)
    assert bits[1:].sum() == 31  # of 63 AC coefficients, 31 lie strictly above their median
    darker = Image.fromarray((np.asarray(img) * 0.8).astype(np.uint8))
    assert (phash_bits(darker) != bits).sum() <= 2  # brightness barely moves it
    other = Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).resize((256, 256))
    assert (phash_bits(other) != bits).sum() >= 16
    assert (phash_bits(_ramp()) != phash_bits(_ramp(rising=False))).sum() >= 1


def test_pack64_and_hamming_matrix_by_hand():
    bits = np.zeros(64, bool)
    bits[-1] = True
    assert pack64(bits) == np.uint64(1)  # first bit is the most significant
    bits[0] = True
    assert pack64(bits) == np.uint64(2 ** 63 + 1)
    assert pack64(np.ones(64, bool)) == np.uint64(2 ** 64 - 1)
    a = np.array([0, 1, 0b1011, 2 ** 64 - 1], np.uint64)
    b = np.array([0, 2 ** 63], np.uint64)
    got = hamming_matrix(a, b)
    assert got.shape == (4, 2) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, [[0, 1], [1, 2], [3, 4], [64, 63]])


def test_group_pairs_joins_chains_and_leaves_singletons():
    g = group_pairs(7, [(5, 6, 0.9), (0, 3), (3, 4), (6, 5)])
    assert g.members == [[0, 3, 4], [5, 6]]
    assert g.of == [0, -1, -1, 0, 0, 1, 1]
    chain = group_pairs(6, [(0, 1), (2, 3), (4, 5), (1, 2), (3, 4)])
    assert chain.members == [[0, 1, 2, 3, 4, 5]] and chain.of == [0] * 6
    assert group_pairs(3, []).members == [] and group_pairs(3, []).of == [-1, -1, -1]


def test_near_duplicate_thresholds_are_used_and_checked():
    rng = np.random.default_rng(2)
    img = Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8)).resize((96, 96))
    other = Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8)).resize((96, 96))
    sigs = [signature(img), signature(other), signature(img.resize((80, 80)))]
    assert [p[:2] for p in near_duplicate_pairs(sigs)] == [(0, 2)]
    assert near_duplicate_pairs(sigs, NearDuplicateThresholds(ncc_min=1.5)) == []   # stage 2 refuses
    loose = NearDuplicateThresholds(phash_max=64, dhash_max=64, ncc_min=0)          # no stage 2
    assert [p[:2] for p in near_duplicate_pairs(sigs, loose)] == [(0, 1), (0, 2), (1, 2)]
    with pytest.raises(LabtfError, match=r"unknown near-duplicate threshold key\(s\) \['phash'\]; "
                                         r"valid keys: phash_max, dhash_max, strict_max, ncc_min"):
        NearDuplicateThresholds.from_dict({"phash": 10})
    with pytest.raises(LabtfError, match="phash_max must be 0..64 bits, got 65"):
        NearDuplicateThresholds(phash_max=65)
    with pytest.raises(LabtfError, match="ncc_min must be a number, got '0.9'"):
        NearDuplicateThresholds(ncc_min="0.9")
