"""Checkpoint callbacks whose files are never half-written: a kill anywhere leaves the old or
the new file, not a corrupt one.

Keras' BackupAndRestore and ModelCheckpoint write their ``.weights.h5`` in place; a run killed
while one was being written could not be resumed ("bad object header version number"). Both
subclasses here write a temporary file and rename it over the old one (atomic on POSIX).
"""
from __future__ import annotations

import json
import os

import keras

from labtf.fileio import write_text


def _tmp(path: str) -> str:
    return f"{path}.tmp.weights.h5"     # keras wants the .weights.h5 suffix


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """BackupAndRestore with atomic writes of its weights and its epoch record.

    The weights are replaced first, then the epoch record: a kill between the two leaves
    the new weights with the previous epoch number, so that epoch runs once more from them.
    """

    def _save_model(self) -> None:
        os.makedirs(self.backup_dir, exist_ok=True)
        tmp = _tmp(self._weights_path)
        self.model.save_weights(filepath=tmp, overwrite=True)
        os.replace(tmp, self._weights_path)
        write_text(self._training_metadata_path,
                   json.dumps({"epoch": self._current_epoch, "batch": self._last_batch_seen}))


class FullModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """An atomic weights-only ModelCheckpoint that saves the whole classifier, also while a
    sub-model of it trains (labtf.trunk_cache)."""

    def __init__(self, full: keras.Model, filepath: str, **kwargs) -> None:
        super().__init__(filepath, save_weights_only=True, **kwargs)
        self._full = full

    def set_model(self, model):
        super().set_model(self._full)

    def _get_file_path(self, epoch, batch, logs):
        return _tmp(super()._get_file_path(epoch, batch, logs))

    def _save_model(self, epoch, batch, logs):
        super()._save_model(epoch, batch, logs)
        tmp = self._get_file_path(epoch, batch, logs)
        if os.path.exists(tmp):
            os.replace(tmp, tmp[:-len(".tmp.weights.h5")])
