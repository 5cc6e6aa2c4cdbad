"""The tf.data input pipeline: decode -> square resize -> cache -> augment -> batch.

Images are decoded by Pillow (every format and mode, see :mod:`labtf.images`)
inside ``tf.numpy_function``, resized once and cached; augmentation runs on the
cached tensors with stateless random ops seeded from one seed, so a run is
deterministic given its seed. Batches hold float32 RGB in 0..255: the model
does the backbone's own preprocessing itself.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from labtf.images import BadImage, load_rgb, to_square
from labtf.manifest import Sample

log = logging.getLogger(__name__)
AUTOTUNE = tf.data.AUTOTUNE


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation; every part can be switched off."""

    flip: bool = True
    crop_scale: tuple[float, float] = (0.6, 1.0)
    rotation_deg: float = 10.0
    brightness: float = 0.15
    contrast: float = 0.15
    saturation: float = 0.15


#: Named augmentation strengths (``TrainConfig.augment_preset``; names in labtf.config).
AUGMENT_PRESETS = {
    "light": AugmentConfig(),
    "strong": AugmentConfig(crop_scale=(0.3, 1.0), rotation_deg=15.0, brightness=0.3,
                            contrast=0.3, saturation=0.4),
}


def _decode_fn(size: int, resize: str):
    def decode(path: bytes) -> np.ndarray:
        try:
            return to_square(load_rgb(path.decode()), size, resize)
        except BadImage as exc:  # the scanner filters these; a file changed since
            log.warning("%s (blank image used)", exc)
            return np.full((size, size, 3), 255, np.uint8)

    return decode


def _rotate(img: tf.Tensor, angle: tf.Tensor, size: int) -> tf.Tensor:
    """Rotate a (H, W, 3) float image about its centre, filling with edge pixels."""
    c = (size - 1) / 2.0
    cos, sin = tf.cos(angle), tf.sin(angle)
    transform = tf.stack([cos, -sin, c - c * cos + c * sin,
                          sin, cos, c - c * sin - c * cos, 0.0, 0.0])
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=img[None], transforms=transform[None], output_shape=[size, size],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="NEAREST")
    return out[0]


def augment(img: tf.Tensor, seed: tf.Tensor, size: int, cfg: AugmentConfig) -> tf.Tensor:
    """Random resized crop, flip, small rotation and colour jitter (stateless).

    Args:
        img: float32 (size, size, 3) in 0..255.
        seed: int64 tensor of shape (2,).
        size: output side.
        cfg: what to apply.

    Returns:
        float32 (size, size, 3) in 0..255.
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=8)
    lo, hi = cfg.crop_scale
    if lo < 1.0:
        area = tf.random.stateless_uniform([], seeds[0], lo, hi)
        log_ratio = tf.random.stateless_uniform([], seeds[1], math.log(3 / 4), math.log(4 / 3))
        ratio = tf.exp(log_ratio)
        h = tf.minimum(tf.sqrt(area / ratio), 1.0)
        w = tf.minimum(tf.sqrt(area * ratio), 1.0)
        y0 = tf.random.stateless_uniform([], seeds[2], 0.0, 1.0) * (1.0 - h)
        x0 = tf.random.stateless_uniform([], seeds[3], 0.0, 1.0) * (1.0 - w)
        box = tf.stack([y0, x0, y0 + h, x0 + w])[None]
        img = tf.image.crop_and_resize(img[None], box, [0], [size, size])[0]
    if cfg.flip:
        img = tf.image.stateless_random_flip_left_right(img, seeds[4])
    if cfg.rotation_deg > 0:
        angle = tf.random.stateless_uniform([], seeds[5], -1.0, 1.0) * cfg.rotation_deg * math.pi / 180
        img = _rotate(img, angle, size)
    if cfg.brightness > 0:
        img = tf.image.stateless_random_brightness(img, cfg.brightness * 255.0, seeds[6])
    if cfg.contrast > 0:
        img = tf.image.stateless_random_contrast(img, 1 - cfg.contrast, 1 + cfg.contrast, seeds[7])
    if cfg.saturation > 0:
        img = tf.image.stateless_random_saturation(img, 1 - cfg.saturation, 1 + cfg.saturation,
                                                   seeds[6][::-1])
    return tf.clip_by_value(img, 0.0, 255.0)


def make_dataset(samples: list[Sample], classes: list[str], image_size: int, batch_size: int,
                 training: bool = False, seed: int = 0, augment_cfg: AugmentConfig | None = None,
                 cache: bool | str = True, one_hot: bool = True,
                 resize: str = "crop") -> tf.data.Dataset:
    """Build a batched dataset of ``(images, labels)``.

    Args:
        samples: the images (paths and labels).
        classes: class names; a label's index in it is its class id.
        image_size: square output side.
        batch_size: batch size.
        training: shuffle and augment (when ``augment_cfg`` is given).
        seed: seed for shuffling and augmentation.
        augment_cfg: augmentation for training; ``None`` disables it.
        cache: ``True`` caches decoded images in memory, a string caches to that file.
        one_hot: labels as one-hot float32 vectors (else int32 ids).
        resize: how images become squares (see :func:`labtf.images.to_square`).

    Returns:
        A prefetched ``tf.data.Dataset``; images float32 (B, S, S, 3) in 0..255.
    """
    index = {c: i for i, c in enumerate(classes)}
    paths = [s.path for s in samples]
    labels = np.array([index[s.label] for s in samples], np.int32)
    ds = tf.data.Dataset.from_tensor_slices((paths, labels))
    decode = _decode_fn(image_size, resize)

    def load(path, label):
        img = tf.numpy_function(decode, [path], tf.uint8, stateful=False)
        img.set_shape((image_size, image_size, 3))
        return img, label

    ds = ds.map(load, num_parallel_calls=AUTOTUNE)
    if cache:
        ds = ds.cache(cache if isinstance(cache, str) else "")
    if training:
        ds = ds.shuffle(max(1, len(samples)), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(lambda img, y: (tf.cast(img, tf.float32), y), num_parallel_calls=AUTOTUNE)
    if training and augment_cfg is not None:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda xy, s: (augment(xy[0], s, image_size, augment_cfg), xy[1]),
            num_parallel_calls=AUTOTUNE)
    if one_hot:
        n = len(classes)
        ds = ds.map(lambda img, y: (img, tf.one_hot(y, n)), num_parallel_calls=AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True
    return ds.batch(batch_size).prefetch(AUTOTUNE).with_options(options)
