"""The Predictor interface every model runtime implements (:mod:`labtf.predict` opens one).

Its own module so that the artifact readers (``exporters/<fmt>.py``, through
:class:`exporters.common.ArtifactPredictor`) and the opener (:mod:`labtf.predict`) both build on
it without importing each other.
"""
from __future__ import annotations

import numpy as np

from labtf.errors import LabtfError


class Predictor:
    """Base class: ``classes``, ``image_size``, ``resize`` and ``predict_batch``.

    Optional capability: ``has_cam`` True means ``predict_batch_with_cam``
    also returns the top class's activation map (N, h, w) in [0, 1].
    """

    classes: list[str]
    image_size: int
    resize: str = "crop"
    has_cam: bool = False

    def predict_batch(self, images: np.ndarray) -> np.ndarray:
        """Probabilities (N, C) for float32 images (N, S, S, 3) in 0..255."""
        raise NotImplementedError

    def predict_batch_with_cam(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities (N, C) and top-class CAM (N, h, w) in [0, 1].

        Raises:
            LabtfError: this predictor has no CAM output.
        """
        raise LabtfError(f"{type(self).__name__} has no CAM output; re-export the model "
                         "with 'labtf export' to get one")
