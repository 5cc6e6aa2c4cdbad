import numpy as np
import pytest
from PIL import Image

from labtf.images import BadImage, center_square, load_rgb, load_rgb_bytes


def _save(img, path, **kw):
    img.save(path, **kw)
    return path


@pytest.mark.parametrize("mode,suffix", [("L", ".png"), ("RGBA", ".png"), ("P", ".gif"),
                                         ("CMYK", ".jpg"), ("RGB", ".bmp"), ("RGB", ".webp"),
                                         ("LA", ".png"), ("I;16", ".png"), ("1", ".png")])
def test_any_mode_becomes_rgb(tmp_path, mode, suffix):
    rng = np.random.default_rng(0)
    base = Image.fromarray((rng.random((30, 40, 3)) * 255).astype(np.uint8))
    img = base.convert(mode) if mode != "I;16" else Image.fromarray(
        (rng.random((30, 40)) * 60000).astype(np.uint16))
    path = _save(img, tmp_path / f"x{suffix}")
    arr = load_rgb(path)
    assert arr.shape == (30, 40, 3) and arr.dtype == np.uint8
    assert arr.std() > 0
    with Image.open(path) as again:
        if mode == "I;16":  # 16-bit grey: 0..65535 -> 0..255 by the high byte (Pillow would clip)
            grey = (np.asarray(again).astype(np.uint32) >> 8).astype(np.uint8)
            want = np.repeat(grey[..., None], 3, axis=-1)
        else:  # opaque images: exactly Pillow's own RGB conversion of the decoded file
            want = np.asarray(again.convert("RGB"))
    np.testing.assert_array_equal(arr, want)
    if suffix in (".png", ".bmp", ".gif") and mode in ("RGB", "RGBA"):
        np.testing.assert_array_equal(arr, np.asarray(base))  # lossless: the very pixels


def test_16bit_png_keeps_its_brightness(tmp_path):
    """A real 16-bit PNG: scaled from 0..65535 (not clipped at 255, not stretched min..max)."""
    grey = np.full((12, 16), 128 * 257, np.uint16)          # mid grey in 16 bits
    grey[:, 8:] = np.arange(12, dtype=np.uint16)[:, None] * 1000   # dark ramp 0..11000
    Image.fromarray(grey).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as check:
        assert check.mode in ("I;16", "I")                   # a true 16-bit file
    for arr in (load_rgb(tmp_path / "g16.png"), load_rgb_bytes((tmp_path / "g16.png").read_bytes())):
        assert (arr[:, :8] == 128).all()                     # clipping: 255; min..max: 255
        np.testing.assert_array_equal(arr[:, 8:, 0], (grey[:, 8:] >> 8).astype(np.uint8))
        assert arr[:, 8:].max() == 42                        # 11000 / 256, not stretched to 255
    tf = pytest.importorskip("tensorflow")
    same = tf.io.decode_png((tmp_path / "g16.png").read_bytes(), channels=3).numpy()
    np.testing.assert_array_equal(load_rgb(tmp_path / "g16.png"), same)  # = TensorFlow's decoder


def test_transparent_becomes_white(tmp_path):
    img = Image.new("RGBA", (20, 20), (255, 0, 0, 0))
    arr = load_rgb(_save(img, tmp_path / "t.png"))
    assert (arr == 255).all()


def test_animated_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (16, 16), c) for c in [(255, 0, 0), (0, 0, 255)]]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    arr = load_rgb(tmp_path / "a.gif")
    assert arr[0, 0, 0] > 200 and arr[0, 0, 2] < 50


@pytest.mark.parametrize("content,reason", [
    (b"", "empty"), (b"hello world", "not an image"), (None, "corrupt")])
def test_bad_files_named(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    if content is None:
        good = tmp_path / "good.jpg"
        Image.new("RGB", (64, 64), (1, 2, 3)).save(good)
        content = good.read_bytes()[:200]
    path.write_bytes(content)
    with pytest.raises(BadImage, match=reason) as info:
        load_rgb(path)
    assert str(path) in str(info.value)


def test_missing_and_tiny(tmp_path):
    with pytest.raises(BadImage, match="cannot read"):
        load_rgb(tmp_path / "nope.png")
    Image.new("RGB", (4, 4)).save(tmp_path / "tiny.png")
    with pytest.raises(BadImage, match="smaller than"):
        load_rgb(tmp_path / "tiny.png")


def test_bytes_and_center_square(tmp_path):
    Image.new("RGB", (100, 50), (10, 200, 30)).save(tmp_path / "w.png")
    arr = load_rgb_bytes((tmp_path / "w.png").read_bytes())
    sq = center_square(arr, 32)
    assert sq.shape == (32, 32, 3) and tuple(sq[16, 16]) == (10, 200, 30)
    with pytest.raises(BadImage):
        load_rgb_bytes(b"\x89PNG garbage")


def test_to_square_modes():
    from labtf.errors import LabtfError
    from labtf.images import to_square

    wide = np.zeros((20, 80, 3), np.uint8)
    wide[:, :10] = (255, 0, 0)  # a red strip at the left edge
    crop, pad, squash = (to_square(wide, 40, m) for m in ("crop", "pad", "squash"))
    assert crop.shape == pad.shape == squash.shape == (40, 40, 3)
    assert (crop[..., 0] < 128).all()            # cropping cuts the strip away
    assert pad[20, 2, 0] > 200 and (pad[0, 20] == 255).all()  # kept, white letterbox
    assert squash[:, :4, 0].min() > 200 and squash[:, -4:, 0].max() < 60
    with pytest.raises(LabtfError, match="crop, pad, squash"):
        to_square(wide, 40, "fit")
