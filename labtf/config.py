"""Small validated configs. Unknown keys and names are refused with the valid list."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

from labtf.errors import LabtfError

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("default", "mirrored", "cpu2", "multiworker")
LR_SCHEDULES = ("constant", "cosine")
#: Augmentation strengths; labtf.data.AUGMENT_PRESETS holds what each means.
AUGMENT_PRESETS = ("light", "strong")


def check_choice(what: str, value: str, valid) -> str:
    """Return ``value`` if it is one of ``valid``, else raise a one-line LabtfError."""
    if value not in valid:
        raise LabtfError(f"unknown {what} '{value}'; choose one of: {', '.join(valid)}")
    return value


def options_from_dict(cls: type, d: dict[str, Any], what: str = "option"):
    """Build the options dataclass ``cls`` from ``d``, refusing unknown keys with the valid ones.

    Args:
        cls: a dataclass whose ``__post_init__`` validates the values.
        d: field name -> value (missing fields keep their defaults).
        what: the word in the error (``unknown config key(s) ...``).

    Raises:
        LabtfError: an unknown key (the message lists the valid ones), or a bad value.
    """
    valid = [f.name for f in fields(cls)]
    unknown = sorted(set(d) - set(valid))
    if unknown:
        raise LabtfError(f"unknown {what} key(s) {unknown}; valid keys: {', '.join(valid)}")
    return cls(**d)


@dataclass
class TrainConfig:
    """Everything that decides a training run; saved as ``config.json`` in the run.

    Attributes:
        data: class-per-folder directory, CSV manifest, or ``tfds:NAME``.
        backbone: registry name (see ``labtf backbones``).
        weights: ``imagenet`` or ``none`` (random initialisation).
        image_size: square input side; ``None`` uses the backbone's own.
        resize: ``crop``, ``pad`` or ``squash`` (see labtf.images.to_square).
        epochs: head-only epochs (stage 1).
        fine_tune_epochs: epochs with the top blocks unfrozen (stage 2; 0 skips it).
        fine_tune_blocks: how many of the backbone's top blocks stage 2 unfreezes.
        augment_preset: ``light`` or ``strong`` (what each means: labtf.data.AUGMENT_PRESETS).
        cache_views: K > 0 trains on cached frozen-trunk activations of K augmented
            views per image (labtf.trunk_cache); 0 runs the whole network every epoch.
        lr_schedule: ``constant`` or ``cosine`` (stage 2: warm-up epoch, then cosine decay).
    """

    data: str
    backbone: str = "efficientnet_lite0"
    weights: str = "imagenet"
    image_size: int | None = None
    resize: str = "pad"
    batch_size: int = 32
    epochs: int = 30
    fine_tune_epochs: int = 10
    fine_tune_blocks: int = 2
    learning_rate: float = 1e-3
    fine_tune_learning_rate: float = 3e-4
    dropout: float = 0.2
    label_smoothing: float = 0.1
    class_weights: bool = True
    augment: bool = True
    early_stopping_patience: int = 5
    mixed_precision: str = "float32"
    strategy: str = "default"
    seed: int = 0
    test_fraction: float = 0.18
    val_fraction: float = 0.1
    split_file: str | None = None
    cache: bool = True
    augment_preset: str = "light"
    cache_views: int = 8
    lr_schedule: str = "cosine"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check values early; raise LabtfError naming the bad one."""
        from labtf.backbones import BACKBONES

        check_choice("backbone", self.backbone, list(BACKBONES))
        check_choice("weights", self.weights, ["imagenet", "none"])
        from labtf.images import RESIZE_MODES

        check_choice("resize mode", self.resize, RESIZE_MODES)
        check_choice("mixed precision policy", self.mixed_precision, PRECISIONS)
        check_choice("strategy", self.strategy, STRATEGIES)
        check_choice("learning-rate schedule", self.lr_schedule, LR_SCHEDULES)
        check_choice("augmentation preset", self.augment_preset, AUGMENT_PRESETS)
        for name in ("batch_size", "epochs"):
            if int(getattr(self, name)) < 1:
                raise LabtfError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("fine_tune_epochs", "fine_tune_blocks", "early_stopping_patience",
                     "cache_views"):
            if int(getattr(self, name)) < 0:
                raise LabtfError(f"{name} must be 0 or more, got {getattr(self, name)}")
        if self.image_size is not None and not 32 <= int(self.image_size) <= 1024:
            raise LabtfError(f"image_size must be between 32 and 1024, got {self.image_size}")
        if not 0.0 < self.test_fraction < 1.0 or not 0.0 <= self.val_fraction < 1.0 \
                or self.test_fraction + self.val_fraction >= 0.9:
            raise LabtfError("test_fraction must be in (0, 1), val_fraction in [0, 1), and "
                             "together under 0.9")
        if not 0.0 <= self.dropout < 1.0 or not 0.0 <= self.label_smoothing < 1.0:
            raise LabtfError("dropout and label_smoothing must be in [0, 1)")

    @property
    def input_size(self) -> int:
        """The square input side actually used."""
        from labtf.backbones import get_backbone

        return int(self.image_size or get_backbone(self.backbone).input_size)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Build from a dict, refusing unknown keys with the list of valid ones."""
        return options_from_dict(cls, d, "config")
