"""A run folder: everything a training run made, and the way to read it back.

Layout::

    RUN/config.json      the full TrainConfig
    RUN/classes.json     class names, index order
    RUN/run.json         backbone, input size, CAM layer, timings, versions
    RUN/split.csv        the split manifest used (path,label,split)
    RUN/model.keras      the trained model (best weights)
    RUN/history.csv/.png training curves
    RUN/metrics.json     written by evaluation
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labtf.errors import LabtfError
from labtf.fileio import write_json, write_text  # noqa: F401  (re-exported)


@dataclass
class Run:
    """A run folder on disk."""

    path: Path

    MODEL = "model.keras"

    @classmethod
    def open(cls, path: str | os.PathLike) -> "Run":
        """Open a finished run.

        Raises:
            LabtfError: the folder is missing or holds no trained model.
        """
        run = cls(Path(path))
        if not run.path.is_dir():
            raise LabtfError(f"run folder {run.path} does not exist; train one with 'labtf train'")
        if not (run.path / cls.MODEL).is_file():
            raise LabtfError(f"{run.path} holds no {cls.MODEL}: training did not finish; "
                             "continue it with 'labtf train ... --resume'")
        return run

    def file(self, name: str) -> Path:
        """Path of a file inside the run."""
        return self.path / name

    def read_json(self, name: str) -> Any:
        """Read a JSON file of the run."""
        try:
            return json.loads(self.file(name).read_text())
        except FileNotFoundError:
            raise LabtfError(f"{self.file(name)} is missing; the run folder is incomplete") from None

    @property
    def classes(self) -> list[str]:
        """Class names in index order."""
        return list(self.read_json("classes.json"))

    @property
    def meta(self) -> dict:
        """run.json: backbone, image_size, cam_layer, ..."""
        return self.read_json("run.json")

    @property
    def config(self):
        """The run's TrainConfig."""
        from labtf.config import TrainConfig

        return TrainConfig.from_dict(self.read_json("config.json"))

    def load_model(self):
        """Load the trained Keras model (labtf's custom layers registered)."""
        import zipfile

        import keras

        import labtf.model  # noqa: F401  registers Preprocess

        path = self.file(self.MODEL)
        try:        # safe_mode (the default) refuses Lambda layers and other arbitrary code
            return keras.saving.load_model(path, compile=False)
        except (ValueError, TypeError, OSError, KeyError, zipfile.BadZipFile) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise LabtfError(f"{path} cannot be loaded safely ({first[:300]}); labtf loads only "
                             "models it trained (no Lambda layers or custom code)") from None
