"""What REST and gRPC share in ``labtf serve``: model lookup, predict and classify.

Both front ends (:mod:`labtf.serving.server`, :mod:`labtf.serving.grpc_server`)
resolve the model spec with :func:`lookup`, run a signature with
:func:`predict_outputs` (same limits, same CAM output) and classify with
:func:`classify_scores`; failures are :class:`RestError` (HTTP status), which
gRPC maps to its status codes with :data:`GRPC_CODES`.
"""
from __future__ import annotations

import asyncio
import re
import time

import numpy as np

from labtf.serving.protocol import RestError

#: Most instances (images) one request may carry.
MAX_INSTANCES = 64

#: HTTP status of a :class:`RestError` -> gRPC status code name.
GRPC_CODES = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 405: "UNIMPLEMENTED",
              408: "DEADLINE_EXCEEDED", 413: "RESOURCE_EXHAUSTED", 429: "RESOURCE_EXHAUSTED",
              503: "RESOURCE_EXHAUSTED", 504: "DEADLINE_EXCEEDED", 500: "INTERNAL"}

#: Feature keys a classify example may carry the encoded image under.
IMAGE_FEATURES = ("image_bytes", "image/encoded")


def lookup(model, name: str, version: str | int | None) -> None:
    """Check a request's model name and version against the served model.

    Raises:
        RestError: 400 a malformed version, 404 another model or version.
    """
    if version is not None and not re.fullmatch(r"[0-9]{1,18}", str(version)):  # ASCII digits
        raise RestError(400, f"version must be a positive integer, got '{version}'")
    if name != model.name:
        spec = f"Specific({name}, {version})" if version else f"Latest({name})"
        raise RestError(404, f"Servable not found for request: {spec}")
    if version is not None and int(version) != model.version:
        raise RestError(404, f"Servable not found for request: Specific({name}, {version}); "
                             f"served version: {model.version}")


def label_version(labels: dict, name: str, label: str) -> int:
    """The version a version label points at (TF Serving's ``/labels/<label>``).

    Raises:
        RestError: 404 an unknown label.
    """
    if label not in labels:
        known = ", ".join(sorted(labels)) or "none (--version-label)"
        raise RestError(404, f"Unrecognized servable version label: {label} for model {name}; "
                             f"labels: {known}")
    return labels[label]


def check_signature(model, signature: str | None, method: str = "predict") -> str:
    """The signature a request names (empty: ``serving_default``).

    Raises:
        RestError: 400 an unknown signature.
    """
    sig = signature or "serving_default"
    if sig not in model.signatures:
        raise RestError(400, f"Serving signature name: \"{sig}\" not found in signature def; "
                             f"available: {', '.join(sorted(model.signatures))}")
    if method == "classify" and sig != "serving_default":
        raise RestError(400, f"':classify' takes encoded images (signature serving_default), "
                             f"not '{sig}'")
    return sig


async def predict_outputs(model, signature: str, arrays: dict, timeout_s: float,
                          deadline: float | None = None) -> dict:
    """Run one signature on validated input arrays.

    Args:
        model: the :class:`~labtf.serving.engine.EdgeModel`.
        signature: ``serving_default`` (``image_bytes``) or ``serving_pixels`` (``image``).
        arrays: input name -> batch array.
        timeout_s: inference timeout.
        deadline: ``time.monotonic()`` by which the answer is due (default: now + timeout);
            decoding stops between images once it has passed.

    Returns:
        ``probabilities`` float32 (N,C), ``class_index`` int64 (N,), ``label`` bytes (N,),
        ``cam`` float32 (N,h,w).

    Raises:
        RestError: 400 too many instances, a bad image or non-finite pixels, 413 too many
            pixels, 503 busy, 504 timeout.
    """
    from labtf.serving.engine import Expired

    deadline = time.monotonic() + timeout_s if deadline is None else deadline
    n = len(next(iter(arrays.values())))
    if n > MAX_INSTANCES:
        raise RestError(400, f"{n} instances in one request; at most {MAX_INSTANCES}")
    if n == 0:
        raise RestError(400, "the request has no instances (batch of 0)")
    if signature == "serving_default":
        job = model.infer(blobs=[bytes(b) for b in np.asarray(arrays["image_bytes"]).ravel()],
                          deadline=deadline)
    else:
        pixels = np.asarray(arrays["image"], np.float32)
        if not np.isfinite(pixels).all():
            bad = int(np.argwhere(~np.isfinite(pixels))[0][0])
            raise RestError(400, f"instances[{bad}].image: non-finite pixel values (NaN or "
                                 "Infinity, or beyond float32); pixels must be numbers 0..255")
        job = model.infer(pixels=np.clip(pixels, 0, 255), deadline=deadline)
    try:
        probs, cams = await asyncio.wait_for(job, max(0.0, deadline - time.monotonic()))
    except (asyncio.TimeoutError, Expired):
        raise RestError(504, f"inference did not finish within {timeout_s:g} s "
                             "(--timeout-s)") from None
    index = probs.argmax(axis=1)
    labels = np.array([model.classes[i].encode() for i in index], dtype=object)
    return {"probabilities": np.asarray(probs, np.float32), "class_index": index.astype(np.int64),
            "label": labels, "cam": np.asarray(cams, np.float32)}


async def classify_scores(model, blobs: list[bytes], timeout_s: float) -> np.ndarray:
    """Class probabilities (N, C) for encoded images (``:classify``, gRPC ``Classify``).

    Raises:
        RestError: as :func:`predict_outputs`.
    """
    out = await predict_outputs(model, "serving_default",
                                {"image_bytes": np.array(blobs, dtype=object)}, timeout_s)
    return out["probabilities"]


def example_images(examples: list[dict], where: str = "examples") -> list[bytes]:
    """The encoded image of each classify example (feature ``image_bytes`` or ``image/encoded``).

    Raises:
        RestError: 400 an example without exactly one image feature.
    """
    if not examples:
        raise RestError(400, f"'{where}' must be a non-empty list")
    blobs = []
    for i, ex in enumerate(examples):
        keys = [k for k in IMAGE_FEATURES if k in ex]
        if len(keys) != 1:
            raise RestError(400, f"{where}[{i}]: expected one image feature "
                                 f"({' or '.join(IMAGE_FEATURES)}), got {sorted(ex)}")
        blobs.append(ex[keys[0]])
    return blobs
