"""Perceptual hashes (pHash, dHash) and near-duplicate grouping (numpy + Pillow + scipy).

pHash: grey 32x32 -> 2-D DCT -> the 8x8 lowest frequencies -> bit = coefficient >
median (64 bits). dHash: grey 9x8 -> bit = pixel brighter than its left
neighbour (64 bits). Hashes alone confuse look-alike layouts (tricolour
flags, white-background clipart), so hash candidates are verified by the
correlation of small grey thumbnails (shift-tolerant, for slight crops) and a
colour-layout distance; see :func:`near_duplicate_pairs`. An optional embedding
stage (:mod:`labtf.curate.embed`, cosine of EfficientNet-Lite0 features) adds candidates and
a verification signal, with a scale-tolerant correlation for cropped copies; images are compared
after trimming a uniform border, and also untrimmed when trimming changed only one of the two.
Pairs are joined into groups with union-find, so a group may span classes (a mislabel or a
shared image). Measured in ``benchmarks/results/collect.md``.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import numbers
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy.fft import dctn

from labtf.config import options_from_dict
from labtf.errors import LabtfError
from labtf.images import to_rgb

log = logging.getLogger(__name__)

#: Stage 1 (hash candidates): pHash <= P and dHash <= D, or either <= STRICT (bits of 64).
PHASH_MAX = 18
DHASH_MAX = 20
STRICT_MAX = 6
#: Stage 2 (verification): grey 24x24 thumbnails correlate >= NCC_MIN at the best shift of
#: up to +-2 px, and the grey-world colour layouts differ by <= COLOUR_MAX.
#: Tuned on planted copies (benchmarks/collect_bench.py).
NCC_MIN = 0.92
COLOUR_MAX = 30.0
THUMB = 24
SHIFT = 2
#: Embedding stage (optional, :mod:`labtf.curate.embed`): pairs with cosine >= EMB_CAND are also
#: candidates; a pair is kept when the colour layouts agree and either (best grey correlation,
#: shift- and scale-tolerant, >= NCC_MIN and cosine >= EMB_MIN) or (correlation >= NCC_STRONG and
#: cosine >= EMB_WEAK) or (correlation >= NCC_EXACT and cosine >= EMB_FLOOR: the same drawing
#: under a colour cast, which moves a CNN embedding of white-background clipart a lot). Tuned on
#: benchmarks/collect_bench.py --nd-only (seeds 0 and 1; seeds 2 and 3 are the held-out check).
EMB_CAND = 0.80
EMB_MIN = 0.92
EMB_WEAK = 0.80
NCC_STRONG = 0.97
NCC_EXACT = 0.99
EMB_FLOOR = 0.5
#: Scale search for crops (2-6% per side): grey thumbnails of these sides, matched against
#: the 24 px centre of the 28 px thumbnail at the centred position +-1 px.
SCALES = tuple(range(25, 33))


def _grey(img: Image.Image) -> Image.Image:
    return to_rgb(img).convert("L")


def phash_bits(img: Image.Image, hash_size: int = 8, highfreq: int = 4) -> np.ndarray:
    """pHash as a bool vector of ``hash_size**2`` bits."""
    n = hash_size * highfreq
    a = np.asarray(_grey(img).resize((n, n), Image.LANCZOS), dtype=np.float64)
    low = dctn(a, type=2, norm="ortho")[:hash_size, :hash_size].ravel()
    return low > np.median(low[1:])


def dhash_bits(img: Image.Image, hash_size: int = 8) -> np.ndarray:
    """dHash (horizontal gradient) as a bool vector of ``hash_size**2`` bits."""
    a = np.asarray(_grey(img).resize((hash_size + 1, hash_size), Image.LANCZOS), dtype=np.int16)
    return (a[:, 1:] > a[:, :-1]).ravel()


def pack64(bits: np.ndarray) -> np.uint64:
    """64 bools -> one uint64."""
    return np.packbits(bits.astype(np.uint8)).view(">u8")[0].astype(np.uint64)


def trim_border(img: Image.Image, tol: int = 36) -> Image.Image:
    """Crop a uniform background border (>= 90% of the edge pixels within ``tol`` of its median)."""
    rgb = to_rgb(img)
    a = np.asarray(rgb, dtype=np.int16)
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    bg = np.median(border, axis=0)
    if (np.abs(border - bg).max(axis=1) <= tol).mean() < 0.9:
        return rgb
    fg = np.abs(a - bg).max(axis=2) > tol
    rows = np.nonzero(fg.mean(axis=1) > 0.01)[0]
    cols = np.nonzero(fg.mean(axis=0) > 0.01)[0]
    if len(rows) < 4 or len(cols) < 4:
        return rgb
    return rgb.crop((int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1))


def colour_layout(rgb: Image.Image) -> np.ndarray:
    """4x4 opponent-colour layout after grey-world normalisation (32 floats).

    The per-channel gain is capped (channel mean floored at 64 of 255): a channel that is
    almost empty (a blue and black flag has no red) would otherwise amplify noise.
    """
    a = np.asarray(rgb.resize((4, 4), Image.BOX), dtype=np.float64)
    a = a / np.maximum(a.reshape(-1, 3).mean(0), 64) * 128
    return np.stack([a[..., 0] - a[..., 1], (a[..., 0] + a[..., 1]) / 2 - a[..., 2]], -1).ravel()


@dataclass
class Signature:
    """What near-duplicate detection keeps per image."""

    phash: int
    dhash: int
    thumb: np.ndarray
    colour: np.ndarray
    scales: list | None = None
    embedding: np.ndarray | None = None
    raw: "Signature | None" = None


def _view(rgb: Image.Image) -> tuple[np.ndarray, np.ndarray, list]:
    """Grey thumbnail, colour layout and scale thumbnails of one view of an image."""
    n = THUMB + 2 * SHIFT
    g = rgb.convert("L")
    thumb = np.asarray(g.resize((n, n), Image.BOX), dtype=np.float32)
    scales = [np.asarray(g.resize((m, m), Image.BOX), dtype=np.float32) for m in SCALES]
    return thumb, colour_layout(rgb), scales


def signature(img: Image.Image) -> Signature:
    """Hashes, grey thumbnail and colour layout of an image (border trimmed first).

    When trimming changed the image, ``raw`` holds the untrimmed view too: a crop that cuts
    into a border which merges with the content (a white flag stripe on white) trims
    differently from its original, but the untrimmed views still match.
    """
    rgb = to_rgb(img)
    t = trim_border(rgb)
    sig = Signature(int(pack64(phash_bits(t))), int(pack64(dhash_bits(t))), *_view(t))
    if t.size != rgb.size:
        sig.raw = Signature(sig.phash, sig.dhash, *_view(rgb))
    return sig


def image_signature(path: str | os.PathLike) -> Signature:
    """:func:`signature` of an image file.

    Raises:
        OSError, ValueError: unreadable image (callers filter those first).
    """
    with Image.open(path) as img:
        img.seek(0)
        img.load()
        return signature(img)


def hamming_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise Hamming distances between uint64 hash vectors, shape (len(a), len(b))."""
    return np.bitwise_count(a[:, None] ^ b[None, :]).astype(np.uint8)


def _best_ncc(thumbs: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Best normalised correlation of i's centre against j's windows shifted by up to SHIFT px."""
    n = THUMB
    a = thumbs[i][:, SHIFT:SHIFT + n, SHIFT:SHIFT + n].reshape(len(i), -1)
    a = a - a.mean(1, keepdims=True)
    a /= np.linalg.norm(a, axis=1, keepdims=True) + 1e-6
    best = np.full(len(i), -1.0, dtype=np.float32)
    for dy in range(2 * SHIFT + 1):
        for dx in range(2 * SHIFT + 1):
            b = thumbs[j][:, dy:dy + n, dx:dx + n].reshape(len(j), -1)
            b = b - b.mean(1, keepdims=True)
            b /= np.linalg.norm(b, axis=1, keepdims=True) + 1e-6
            best = np.maximum(best, (a * b).sum(1))
    return best


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(1, keepdims=True)
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-6)


def _scaled_ncc(sigs: list[Signature], i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Best correlation of i's 24 px centre against j's thumbnails at the sides in SCALES
    (centred +-1 px): absorbs a crop of either image by a few % per side."""
    n, c0 = THUMB, (THUMB + 2 * SHIFT - THUMB) // 2
    a = _unit_rows(np.stack([sigs[k].thumb[c0:c0 + n, c0:c0 + n] for k in i]).reshape(len(i), -1))
    best = np.full(len(i), -1.0, dtype=np.float32)
    for si, m in enumerate(SCALES):
        b_all = np.stack([sigs[k].scales[si] for k in j])
        c = (m - n) // 2
        for dy in range(max(0, c - 1), min(m - n, c + 1) + 1):
            for dx in range(max(0, c - 1), min(m - n, c + 1) + 1):
                b = _unit_rows(b_all[:, dy:dy + n, dx:dx + n].reshape(len(j), -1))
                best = np.maximum(best, (a * b).sum(1))
    return best


class _Views:
    """Stacked thumbnails and colour layouts of one view per image."""

    def __init__(self, sigs: list[Signature]):
        self.sigs = sigs
        self.thumbs = np.stack([s.thumb for s in sigs])
        self.colours = np.stack([s.colour for s in sigs])


@dataclass(frozen=True)
class NearDuplicateThresholds:
    """The thresholds of :func:`near_duplicate_pairs` (defaults: the module constants).

    Attributes:
        phash_max, dhash_max, strict_max: stage-1 Hamming thresholds (bits of 64).
        ncc_min, colour_max: stage-2 thresholds (``ncc_min`` <= 0 skips stage 2).
        emb_cand, emb_min, emb_weak, ncc_strong, ncc_exact, emb_floor: embedding-stage
            thresholds, used only when every signature has an ``embedding`` (and ``scales``).
    """

    phash_max: int = PHASH_MAX
    dhash_max: int = DHASH_MAX
    strict_max: int = STRICT_MAX
    ncc_min: float = NCC_MIN
    colour_max: float = COLOUR_MAX
    emb_cand: float = EMB_CAND
    emb_min: float = EMB_MIN
    emb_weak: float = EMB_WEAK
    ncc_strong: float = NCC_STRONG
    ncc_exact: float = NCC_EXACT
    emb_floor: float = EMB_FLOOR

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or math.isnan(v):
                raise LabtfError(f"near-duplicate threshold {f.name} must be a number, got {v!r}")
        for name in ("phash_max", "dhash_max", "strict_max"):
            if not 0 <= getattr(self, name) <= 64:
                raise LabtfError(f"{name} must be 0..64 bits, got {getattr(self, name)}")
        if self.colour_max < 0:
            raise LabtfError(f"colour_max must be 0 or more, got {self.colour_max}")

    @classmethod
    def from_dict(cls, d: dict) -> "NearDuplicateThresholds":
        """Build from a dict, refusing unknown keys with the list of valid ones."""
        return options_from_dict(cls, d, "near-duplicate threshold")


#: The embedding-stage fields of :class:`NearDuplicateThresholds`.
EMBEDDING_THRESHOLDS = ("emb_cand", "emb_min", "emb_weak", "ncc_strong", "ncc_exact", "emb_floor")


def _verify(v: _Views, i: np.ndarray, j: np.ndarray, cos: np.ndarray | None,
            th: NearDuplicateThresholds) -> tuple[np.ndarray, np.ndarray]:
    """Stage-2 check of pairs (i[k], j[k]): (best correlation, accepted) per pair."""
    if th.ncc_min <= 0:
        return np.ones(len(i), dtype=np.float32), np.ones(len(i), dtype=bool)
    col = np.abs(v.colours[i] - v.colours[j]).mean(1)
    if cos is None:
        ncc = _best_ncc(v.thumbs, i, j)
        return ncc, (ncc >= th.ncc_min) & (col <= th.colour_max)
    ncc = np.maximum(_best_ncc(v.thumbs, i, j), np.maximum(_scaled_ncc(v.sigs, i, j),
                                                           _scaled_ncc(v.sigs, j, i)))
    ok = (col <= th.colour_max) & (((ncc >= th.ncc_min) & (cos >= th.emb_min))
                                   | ((ncc >= th.ncc_strong) & (cos >= th.emb_weak))
                                   | ((ncc >= th.ncc_exact) & (cos >= th.emb_floor)))
    return ncc, ok


def near_duplicate_pairs(sigs: list[Signature], thresholds: NearDuplicateThresholds | None = None,
                         *, chunk: int = 1024) -> list[tuple[int, int, int, int, float]]:
    """All pairs i < j that are near-duplicates (hash candidates, then verified).

    Args:
        sigs: one :class:`Signature` per image.
        thresholds: the stage thresholds [:class:`NearDuplicateThresholds`' defaults].
        chunk: rows per block (memory bound: chunk * N bytes).

    Returns:
        (i, j, pHash distance, dHash distance, correlation) tuples.
    """
    th = thresholds or NearDuplicateThresholds()
    if not sigs:
        return []
    p = np.array([s.phash for s in sigs], dtype=np.uint64)
    d = np.array([s.dhash for s in sigs], dtype=np.uint64)
    use_emb = all(s.embedding is not None and s.scales is not None for s in sigs)
    emb = np.stack([s.embedding for s in sigs]).astype(np.float32) if use_emb else None
    # untrimmed views: every rule needs cosine >= emb_min (the colour-cast rule is off), as
    # untrimmed clipart correlates on its blank background alone
    th_raw = dataclasses.replace(th, emb_weak=th.emb_min, ncc_exact=np.inf, emb_floor=th.emb_min)
    views = _Views(sigs)
    has_raw = np.array([s.raw is not None for s in sigs])
    raws = _Views([s.raw or s for s in sigs]) if use_emb and has_raw.any() else None
    out = []
    for s in range(0, len(p), chunk):
        dp = hamming_matrix(p[s:s + chunk], p)
        dd = hamming_matrix(d[s:s + chunk], d)
        hit = (((dp <= th.phash_max) & (dd <= th.dhash_max)) | (dp <= th.strict_max)
               | (dd <= th.strict_max))
        if use_emb:
            cos = emb[s:s + chunk] @ emb.T
            hit |= cos >= th.emb_cand
        ii, jj = np.nonzero(hit)
        keep = ii + s < jj
        ii, jj = ii[keep], jj[keep]
        for k in range(0, len(ii), 4096):
            bi, bj = ii[k:k + 4096], jj[k:k + 4096]
            gi = bi + s
            cs = cos[bi, bj] if use_emb else None
            ncc, ok = _verify(views, gi, bj, cs, th)
            # untrimmed views where trimming changed only one of the two images
            two = np.nonzero(has_raw[gi] != has_raw[bj])[0] if raws is not None else []
            if len(two):
                ncc2, ok2 = _verify(raws, gi[two], bj[two], cs[two], th_raw)
                ncc[two] = np.maximum(ncc[two], ncc2)
                ok[two] |= ok2
            for a, b, c, v in zip(bi[ok], bj[ok], gi[ok], ncc[ok]):
                out.append((int(c), int(b), int(dp[a, b]), int(dd[a, b]), round(float(v), 4)))
    return out


class UnionFind:
    """Disjoint sets over 0..n-1 with path halving and union by size."""

    def __init__(self, n: int):
        self.parent = list(range(n))
        self.size = [1] * n

    def find(self, x: int) -> int:
        """Representative of x's set."""
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        """Join the sets of a and b."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]


@dataclass
class Groups:
    """Near-duplicate groups: ``members[g]`` lists indices; ``of[i]`` is i's group (or -1)."""

    members: list[list[int]]
    of: list[int]


def group_pairs(n: int, pairs: list[tuple[int, ...]]) -> Groups:
    """Union-find the pairs into groups of 2+ items (singletons get group -1)."""
    uf = UnionFind(n)
    for i, j, *_ in pairs:
        uf.union(i, j)
    roots: dict[int, list[int]] = {}
    for i in range(n):
        roots.setdefault(uf.find(i), []).append(i)
    members = sorted((m for m in roots.values() if len(m) > 1), key=lambda m: m[0])
    of = [-1] * n
    for g, m in enumerate(members):
        for i in m:
            of[i] = g
    return Groups(members, of)
