"""TF Serving's REST JSON protocol: request -> tensors, tensors -> response.

Follows TF Serving's ``json_tensor.cc`` (``FillPredictRequestFromJson`` /
``MakeJsonFromTensors``), so that the edge server and ``tensorflow_model_server``
speak the same JSON, and tests can feed a SavedModel exactly what TF Serving
would:

* row format ``{"signature_name": ..., "instances": [...]}``: one entry per
  example, either ``{input_name: value}`` or, for a one-input signature, the
  bare value; ``{"b64": "..."}`` objects become bytes; instances are stacked
  along a new batch dimension. Answer: ``{"predictions": [...]}``, one object
  ``{output_name: value}`` per example (a bare value when there is one output).
* columnar format ``{"inputs": {name: batched value}}`` (or the bare value for
  a one-input signature). Answer: ``{"outputs": {name: batched value}}``.

String outputs are written as text unless the output name ends in ``_bytes``
(then ``{"b64": ...}``), as TF Serving does. Errors are :class:`RestError`
(HTTP status + message), rendered as ``{"error": "..."}``.
"""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import numpy as np

#: TF dtype enum names used by the metadata endpoint.
DT_NAMES = {"string": "DT_STRING", "float32": "DT_FLOAT", "int64": "DT_INT64"}


class RestError(Exception):
    """A request the server refuses: ``status`` (HTTP code) and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class TensorInfo:
    """One signature input/output: dtype name ("string", "float32", "int64") and shape."""

    dtype: str
    shape: tuple   # -1 for unknown dimensions; first is the batch


def labtf_signatures(image_size: int, num_classes: int, cam_hw: tuple[int, int]) -> dict:
    """The signatures of a labtf SavedModel (and of the edge server).

    Returns:
        ``{signature_name: (inputs, outputs)}`` with :class:`TensorInfo` dicts.
    """
    outputs = {"probabilities": TensorInfo("float32", (-1, num_classes)),
               "class_index": TensorInfo("int64", (-1,)),
               "label": TensorInfo("string", (-1,)),
               "cam": TensorInfo("float32", (-1, *cam_hw))}
    return {"serving_default": ({"image_bytes": TensorInfo("string", (-1,))}, outputs),
            "serving_pixels": ({"image": TensorInfo("float32", (-1, image_size, image_size, 3))},
                               outputs)}


def decode_b64(value: str, where: str) -> bytes:
    if not isinstance(value, str):
        raise RestError(400, f"{where}: 'b64' must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise RestError(400, f"{where}: invalid base64 data in 'b64'") from None


def _to_array(value, info: TensorInfo, where: str, batched: bool) -> np.ndarray:
    """A JSON value -> numpy array of the input's dtype (strings as object arrays of bytes)."""
    if info.dtype == "string":
        def conv(v, path):
            if isinstance(v, list):
                return [conv(x, f"{path}[{i}]") for i, x in enumerate(v)]
            if isinstance(v, dict):
                if set(v) != {"b64"}:
                    raise RestError(400, f"{path}: expected a string or {{\"b64\": ...}}, "
                                         f"got an object with keys {sorted(v)}")
                return decode_b64(v["b64"], path)
            if isinstance(v, str):
                return v.encode("utf-8")
            raise RestError(400, f"{path}: expected a string or {{\"b64\": ...}}, "
                                 f"got {type(v).__name__}")

        data = conv(value, where)
        if isinstance(data, list):
            arr = np.array(data, dtype=object)
        else:
            arr = np.empty((), dtype=object)
            arr[()] = data
    else:
        try:
            arr = np.asarray(value, dtype=np.dtype(info.dtype))
        except (TypeError, ValueError):
            raise RestError(400, f"{where}: expected numbers of type {info.dtype} "
                                 f"in a rectangular nested list") from None
    want = info.shape if batched else info.shape[1:]
    if arr.ndim != len(want) or any(w not in (-1, g) for w, g in zip(want, arr.shape)):
        raise RestError(400, f"{where}: shape {list(arr.shape)} does not match the signature's "
                             f"{list(want)} (-1 = any)")
    return arr


def parse_predict(body, signatures: dict) -> tuple[str, dict, str]:
    """A decoded predict request -> (signature name, input arrays, "row" | "columnar").

    Args:
        body: the parsed JSON body.
        signatures: ``{name: (inputs, outputs)}`` as :func:`labtf_signatures` returns.

    Raises:
        RestError: 400 with what is wrong in the request.
    """
    if not isinstance(body, dict):
        raise RestError(400, "request body must be a JSON object with 'instances' or 'inputs'")
    sig_name = body.get("signature_name")
    if sig_name is not None and not isinstance(sig_name, str):
        raise RestError(400, f"'signature_name' must be a string, got {type(sig_name).__name__}")
    sig_name = sig_name or "serving_default"
    if sig_name not in signatures:
        raise RestError(400, f"Serving signature name: \"{sig_name}\" not found in signature def; "
                             f"available: {', '.join(sorted(signatures))}")
    inputs = signatures[sig_name][0]
    if ("instances" in body) == ("inputs" in body):
        raise RestError(400, "request must have exactly one of 'instances' (row format) or "
                             "'inputs' (columnar format)")
    if "instances" in body:
        rows = body["instances"]
        if not isinstance(rows, list) or not rows:
            raise RestError(400, "'instances' must be a non-empty list")
        columns: dict = {name: [] for name in inputs}
        for i, inst in enumerate(rows):
            named = isinstance(inst, dict) and set(inst) != {"b64"}
            if not named:
                if len(inputs) != 1:
                    raise RestError(400, f"instances[{i}]: expected an object with inputs "
                                         f"{sorted(inputs)}")
                inst = {next(iter(inputs)): inst}
            missing, extra = set(inputs) - set(inst), set(inst) - set(inputs)
            if missing or extra:
                raise RestError(400, f"instances[{i}]: expected inputs {sorted(inputs)}, got "
                                     f"{sorted(inst)}")
            for name, info in inputs.items():
                columns[name].append(_to_array(inst[name], info, f"instances[{i}].{name}", False))
        arrays = {}
        for name, parts in columns.items():
            if len({p.shape for p in parts}) > 1:
                raise RestError(400, f"input '{name}': instances have different shapes and "
                                     "cannot be batched")
            arrays[name] = np.stack(parts) if parts[0].dtype != object else _stack_obj(parts)
        return sig_name, arrays, "row"
    cols = body["inputs"]
    if not isinstance(cols, dict) or (len(inputs) == 1 and set(cols) == {"b64"}):
        if len(inputs) != 1:
            raise RestError(400, f"'inputs' must be an object with keys {sorted(inputs)}")
        cols = {next(iter(inputs)): cols}
    if set(cols) != set(inputs):
        raise RestError(400, f"'inputs': expected keys {sorted(inputs)}, got {sorted(cols)}")
    arrays = {n: _to_array(cols[n], info, f"inputs.{n}", True) for n, info in inputs.items()}
    if len({a.shape[0] for a in arrays.values()}) > 1:
        raise RestError(400, "'inputs': the inputs have different batch sizes")
    if not next(iter(arrays.values())).shape[0]:
        raise RestError(400, "'inputs' holds 0 examples; send at least one")
    return sig_name, arrays, "columnar"


def _stack_obj(parts: list[np.ndarray]) -> np.ndarray:
    out = np.empty((len(parts), *parts[0].shape), dtype=object)
    for i, p in enumerate(parts):
        out[i, ...] = p
    return out


def _jsonable(name: str, arr: np.ndarray):
    arr = np.asarray(arr)
    if arr.dtype == object or arr.dtype.kind in "SU":
        def conv(v):
            if isinstance(v, (list, np.ndarray)):
                return [conv(x) for x in v]
            b = v if isinstance(v, bytes) else str(v).encode()
            if name.endswith("_bytes"):
                return {"b64": base64.b64encode(b).decode("ascii")}
            return b.decode("utf-8", errors="replace")
        return conv(list(arr) if arr.ndim else arr.item())
    return arr.tolist()


def format_predict(outputs: dict, fmt: str) -> dict:
    """Output arrays (batch first) -> TF Serving's response object.

    Args:
        outputs: ``{output_name: array}``.
        fmt: ``"row"`` or ``"columnar"`` (the request's format).
    """
    names = sorted(outputs)
    if fmt == "columnar":
        if len(names) == 1:
            return {"outputs": _jsonable(names[0], outputs[names[0]])}
        return {"outputs": {n: _jsonable(n, outputs[n]) for n in names}}
    cols = {n: _jsonable(n, outputs[n]) for n in names}
    batch = len(next(iter(cols.values())))
    if len(names) == 1:
        return {"predictions": cols[names[0]]}
    return {"predictions": [{n: cols[n][i] for n in names} for i in range(batch)]}


def status_json(version: int | str) -> dict:
    """``GET /v1/models/<name>`` answer for one available version."""
    return {"model_version_status": [{"version": str(version), "state": "AVAILABLE",
                                      "status": {"error_code": "OK", "error_message": ""}}]}


def metadata_json(name: str, version: int | str, signatures: dict, extra: dict | None = None) -> dict:
    """``GET /v1/models/<name>/metadata`` answer (TF Serving's SignatureDefMap JSON).

    Args:
        name: model name.
        version: served version.
        signatures: as :func:`labtf_signatures` returns.
        extra: added under the ``labtf`` key (ignored by TF Serving clients).
    """
    def info(sig: str, kind: str, key: str, t: TensorInfo) -> dict:
        return {"dtype": DT_NAMES[t.dtype], "tensor_shape": {
            "dim": [{"size": str(d), "name": ""} for d in t.shape], "unknown_rank": False},
            "name": f"{sig}_{key}:0" if kind == "in" else f"StatefulPartitionedCall:{key}"}

    defs = {sig: {"inputs": {k: info(sig, "in", k, t) for k, t in ins.items()},
                  "outputs": {k: info(sig, "out", k, t) for k, t in outs.items()},
                  "method_name": "tensorflow/serving/predict", "defaults": {}}
            for sig, (ins, outs) in signatures.items()}
    out = {"model_spec": {"name": name, "signature_name": "", "version": str(version)},
           "metadata": {"signature_def": {"signature_def": defs}}}
    if extra:
        out["labtf"] = extra
    return out
