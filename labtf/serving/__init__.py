"""Serving: TF Serving model repository, REST client and the labtf edge server.

* :mod:`labtf.serving.protocol`: TF Serving's REST JSON (request/response shapes).
* :mod:`labtf.serving.repository`: ``models.config`` / batching files and the
  ``tensorflow_model_server`` and docker command lines.
* :mod:`labtf.serving.client`: :class:`Client` for ``/v1/models/...`` (TF Serving
  or ``labtf serve``); standard library only.
* :mod:`labtf.serving.server`: ``labtf serve`` (aiohttp), imported on demand.
* :mod:`labtf.serving.static`: ``labtf serve DIR`` for a web-app folder (standard library).
"""
from __future__ import annotations

from labtf.serving.client import Client, ServedPrediction

__all__ = ["Client", "ServedPrediction"]
