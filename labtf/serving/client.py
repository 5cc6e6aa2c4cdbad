"""Client for TF Serving and ``labtf serve``: REST (standard library only) or gRPC.

``Client(url, model, version)`` talks to ``/v1/models/<model>[/versions/<v>]``
with ``:predict``, status and ``/metadata``. One keep-alive connection per
client: use one client per thread. With a ``grpc://HOST:PORT`` URL the same
calls go over TF Serving's gRPC API (``tensorflow-serving-api`` stubs:
Predict, GetModelMetadata, GetModelStatus) and answer the same dicts. Every
failure is a :class:`ServingError` with one line (connection refused, timeout,
the server's ``{"error": ...}`` or gRPC status).
"""
from __future__ import annotations

import base64
import http.client
import json
import logging
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from labtf.errors import LabtfError

log = logging.getLogger(__name__)


class ServingError(LabtfError):
    """A failed request; ``status`` is the HTTP code (0 when there was no answer)."""

    def __init__(self, message: str, status: int = 0, detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail or message


@dataclass
class ServedPrediction:
    """One image's answer: top label, its confidence, all probabilities and the CAM."""

    label: str
    confidence: float
    class_index: int
    probabilities: np.ndarray
    cam: np.ndarray | None


#: gRPC status name -> the HTTP status REST would answer (ServingError.status).
GRPC_TO_HTTP = {"INVALID_ARGUMENT": 400, "NOT_FOUND": 404, "RESOURCE_EXHAUSTED": 503,
                "DEADLINE_EXCEEDED": 504, "UNIMPLEMENTED": 501, "INTERNAL": 500,
                "UNAVAILABLE": 0}


class Client:
    """A model on a TF Serving compatible server (REST, or gRPC with ``grpc://``).

    Args:
        url: server root, e.g. ``http://127.0.0.1:8501`` or ``grpc://127.0.0.1:8500``.
        model: model name.
        version: a specific version [the server's latest].
        timeout: seconds for connecting and for each answer.
    """

    def __init__(self, url: str, model: str, version: int | None = None,
                 timeout: float = 30.0) -> None:
        self.model, self.version, self.timeout = model, version, timeout
        self._meta: dict | None = None
        self._conn: http.client.HTTPConnection | None = None
        self._grpc: _Grpc | None = None
        if url.startswith("grpc://"):
            self.url = url.rstrip("/")
            self._grpc = _Grpc(url[len("grpc://"):].rstrip("/"), model, version, timeout)
            return
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ServingError(f"server URL '{url}' is not http(s)://HOST[:PORT]")
        self.url = f"{parts.scheme}://{parts.netloc}"
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname, parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")

    # -- transport -------------------------------------------------------------------
    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self.timeout)
        return self._conn

    def close(self) -> None:
        """Close the keep-alive connection (or the gRPC channel)."""
        if self._grpc is not None:
            self._grpc.close()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(self, method: str, path: str, body: dict | bytes | None = None) -> dict:
        """One request; returns the JSON answer.

        Raises:
            ServingError: no connection, timeout, HTTP error or a non-JSON answer.
        """
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        headers = {"Content-Type": "application/json"} if data is not None else {}
        where = f"{self.url}{self._prefix}{path}"
        for attempt in (0, 1):
            conn = self._connection()
            try:
                try:
                    conn.request(method, self._prefix + path, body=data, headers=headers)
                    sent = True
                except (BrokenPipeError, ConnectionResetError):
                    if conn.sock is None:
                        raise
                    sent = False   # the server may have answered (413) before reading it all
                if sent:
                    resp = conn.getresponse()
                else:
                    resp = http.client.HTTPResponse(conn.sock, method=method)
                    resp.begin()
                raw = resp.read()
                status = resp.status
                if resp.getheader("Connection", "").lower() == "close":
                    self.close()
                break
            except ConnectionRefusedError:
                self.close()
                raise ServingError(f"cannot connect to {self.url} (connection refused); "
                                   "is the server running?") from None
            except (socket.timeout, TimeoutError):
                self.close()
                raise ServingError(f"no answer from {where} within {self.timeout:g} s") from None
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.close()   # a stale keep-alive connection: retry once on a new one
                if attempt == 1:
                    size = f" while sending {len(data) / 1e6:.1f} MB" if data else ""
                    raise ServingError(f"{where}: connection closed by the server{size} "
                                       f"({type(exc).__name__})") from None
            except OSError as exc:
                self.close()
                raise ServingError(f"cannot reach {self.url}: {exc.strerror or exc}") from None
        try:
            answer = json.loads(raw) if raw else {}
        except ValueError:
            answer = None
        if status >= 400:
            msg = answer.get("error") if isinstance(answer, dict) else None
            text = msg or raw[:200].decode("utf-8", "replace").strip() or "no details"
            raise ServingError(f"{method} {where}: HTTP {status}: {text}", status, text)
        if not isinstance(answer, dict):
            raise ServingError(f"{method} {where}: the answer is not JSON")
        return answer

    def _model_path(self) -> str:
        path = f"/v1/models/{self.model}"
        return path + (f"/versions/{int(self.version)}" if self.version is not None else "")

    # -- API -------------------------------------------------------------------------
    def status(self) -> dict:
        """``GET /v1/models/<model>[/versions/<v>]`` (``model_version_status``)."""
        if self._grpc is not None:
            return self._grpc.status()
        return self.request("GET", self._model_path())

    def metadata(self) -> dict:
        """``GET /v1/models/<model>[/versions/<v>]/metadata`` (cached)."""
        if self._meta is None:
            self._meta = (self._grpc.metadata() if self._grpc is not None
                          else self.request("GET", self._model_path() + "/metadata"))
        return self._meta

    def predict_raw(self, body: dict) -> dict:
        """``POST ...:predict`` with a ready TF Serving request body (REST only)."""
        if self._grpc is not None:
            raise ServingError("predict_raw is REST only; use predict() over gRPC")
        return self.request("POST", self._model_path() + ":predict", body)

    def classify(self, images: list) -> list[list[tuple[str, float]]]:
        """TF Serving ``:classify`` / gRPC ``Classify``: every class and its score per image."""
        blobs = [x if isinstance(x, (bytes, bytearray)) else _read(x) for x in images]
        if self._grpc is not None:
            return self._grpc.classify(blobs)
        answer = self.request("POST", self._model_path() + ":classify", {"examples": [
            {"image_bytes": {"b64": base64.b64encode(b).decode("ascii")}} for b in blobs]})
        return [[(str(c), float(p)) for c, p in row] for row in answer.get("results", [])]

    def predict(self, images: list) -> list[ServedPrediction]:
        """Predict encoded images (bytes or file paths), in one request.

        Raises:
            ServingError: a failed request; LabtfError: an unreadable file.
        """
        blobs = [x if isinstance(x, (bytes, bytearray)) else _read(x) for x in images]
        if self._grpc is not None:
            out = self._grpc.predict(blobs)
            labels = [v.decode() if isinstance(v, bytes) else str(v) for v in out["label"]]
            return [ServedPrediction(labels[i], float(out["probabilities"][i, j]), int(j),
                                     out["probabilities"][i].astype(np.float64), out["cam"][i])
                    for i, j in enumerate(out["class_index"])]
        body = {"signature_name": "serving_default", "instances": [
            {"image_bytes": {"b64": base64.b64encode(b).decode("ascii")}} for b in blobs]}
        answer = self.predict_raw(body)
        preds = answer.get("predictions")
        if not isinstance(preds, list) or len(preds) != len(blobs):
            raise ServingError(f"{self.url}: unexpected answer (no 'predictions' list)")
        out = []
        for p in preds:
            probs = np.asarray(p["probabilities"], np.float64)
            label = p.get("label")
            index = int(p.get("class_index", int(np.argmax(probs))))
            cam = np.asarray(p["cam"], np.float32) if "cam" in p else None
            out.append(ServedPrediction(label, float(probs[index]), index, probs, cam))
        return out

    # -- labtf.predict compatibility -------------------------------------------------
    @property
    def classes(self) -> list[str] | None:
        """Class names when the server says (``labtf serve``); None for TF Serving."""
        return self.metadata().get("labtf", {}).get("classes")

    @property
    def image_size(self) -> int:
        """Model input side, from the ``serving_pixels`` signature."""
        defs = self.metadata()["metadata"]["signature_def"]["signature_def"]
        try:
            return int(defs["serving_pixels"]["inputs"]["image"]["tensor_shape"]["dim"][1]["size"])
        except (KeyError, IndexError, ValueError):
            return 224

    @property
    def resize(self) -> str:
        return self.metadata().get("labtf", {}).get("resize", "crop")

    def predict_files(self, paths: list, top_k: int = 1, with_cam: bool = False,
                      batch_size: int = 8) -> list:
        """Like :func:`labtf.predict.predict_files`, through the server.

        Unreadable files get ``error``; the rest are sent in batches. Without
        class names (TF Serving) only the top-1 label is known; other entries
        are named ``#<index>``.
        """
        from labtf.predict import Prediction

        results = [Prediction(str(p)) for p in paths]
        good = []
        for i, p in enumerate(paths):
            try:
                good.append((i, _read(p)))
            except LabtfError as exc:
                results[i].error = str(exc)
        classes = self.classes if top_k > 1 else None
        for start in range(0, len(good), batch_size):
            chunk = good[start:start + batch_size]
            try:
                served = self.predict([b for _, b in chunk])
            except ServingError as exc:
                if exc.status != 400 or len(chunk) == 1:
                    raise
                served = []   # one bad image fails the batch: retry one by one
                for i, b in chunk:
                    try:
                        served += self.predict([b])
                    except ServingError as one:
                        if one.status != 400:
                            raise
                        results[i].error = (f"{paths[i]}: rejected by the server "
                                            f"(HTTP {one.status}: {one.detail})")
                        served.append(None)
            for (i, _), s in zip(chunk, served):
                if s is None:
                    continue
                order = np.argsort(-s.probabilities)[:max(1, top_k)]
                name = (lambda j: classes[j]) if classes else (lambda j: f"#{j}")
                results[i].top = [(s.label if j == s.class_index else name(j),
                                   float(s.probabilities[j])) for j in order]
                results[i].cam = s.cam if with_cam else None
        return results


def _read(path) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise LabtfError(f"{path}: cannot read ({exc.strerror}); check the path") from None
    if not data:
        raise LabtfError(f"{path}: empty file (0 bytes)")
    return data


def _grpc_apis():
    try:
        import grpc
        import tensorflow as tf
        from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                             get_model_status_pb2, model_service_pb2_grpc,
                                             predict_pb2, prediction_service_pb2_grpc)
    except ImportError:
        raise LabtfError("gRPC needs 'tensorflow-serving-api' (pip install tensorflow-serving-api "
                         "--no-deps); the REST client needs nothing extra") from None
    return (grpc, tf, classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
            model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc)


class _Grpc:
    """One channel to a TF Serving gRPC endpoint with the official stubs."""

    def __init__(self, target: str, model: str, version: int | None, timeout: float) -> None:
        (self.grpc, self.tf, self.cls_pb2, self.meta_pb2, self.status_pb2, model_grpc,
         self.predict_pb2, pred_grpc) = _grpc_apis()
        self.target, self.model, self.version, self.timeout = target, model, version, timeout
        self.channel = self.grpc.insecure_channel(target, options=[
            ("grpc.max_receive_message_length", 64 * 1024 * 1024)])
        self.prediction = pred_grpc.PredictionServiceStub(self.channel)
        self.models = model_grpc.ModelServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def _spec(self, spec, signature: str = "") -> None:
        spec.name = self.model
        if self.version is not None:
            spec.version.value = int(self.version)
        if signature:
            spec.signature_name = signature

    def _call(self, method, request, what: str):
        try:
            return method(request, timeout=self.timeout)
        except self.grpc.RpcError as exc:
            code = exc.code().name if exc.code() else "UNKNOWN"
            detail = exc.details() or code
            if code == "UNAVAILABLE":
                raise ServingError(f"cannot reach grpc://{self.target} ({detail})") from None
            if code == "DEADLINE_EXCEEDED" and "within" not in detail:
                detail = f"no answer within {self.timeout:g} s"
            raise ServingError(f"gRPC {what} grpc://{self.target}: {code}: {detail}",
                               GRPC_TO_HTTP.get(code, 500), detail) from None

    def predict(self, blobs: list[bytes], signature: str = "serving_default") -> dict:
        req = self.predict_pb2.PredictRequest()
        self._spec(req.model_spec, signature)
        req.inputs["image_bytes"].CopyFrom(
            self.tf.make_tensor_proto(list(blobs), dtype=self.tf.string))
        resp = self._call(self.prediction.Predict, req, "Predict")
        return {k: self.tf.make_ndarray(v) for k, v in resp.outputs.items()}

    def classify(self, blobs: list[bytes]) -> list[list[tuple[str, float]]]:
        req = self.cls_pb2.ClassificationRequest()
        self._spec(req.model_spec)
        for b in blobs:
            req.input.example_list.examples.add().features.feature[
                "image_bytes"].bytes_list.value.append(bytes(b))
        resp = self._call(self.prediction.Classify, req, "Classify")
        return [[(c.label, float(c.score)) for c in row.classes]
                for row in resp.result.classifications]

    def status(self) -> dict:
        req = self.status_pb2.GetModelStatusRequest()
        self._spec(req.model_spec)
        resp = self._call(self.models.GetModelStatus, req, "GetModelStatus")
        names = self.status_pb2.ModelVersionStatus.State.Name
        return {"model_version_status": [
            {"version": str(s.version), "state": names(s.state),
             "status": {"error_code": "OK" if not s.status.error_code else str(s.status.error_code),
                        "error_message": s.status.error_message}}
            for s in resp.model_version_status]}

    def metadata(self) -> dict:
        """GetModelMetadata as the REST answer's dict (signature_def + labtf)."""
        from google.protobuf import json_format, struct_pb2

        req = self.meta_pb2.GetModelMetadataRequest()
        self._spec(req.model_spec)
        req.metadata_field.extend(["signature_def", "labtf"])
        resp = self._call(self.prediction.GetModelMetadata, req, "GetModelMetadata")
        sdm = self.meta_pb2.SignatureDefMap()
        resp.metadata["signature_def"].Unpack(sdm)
        out = {"model_spec": {"name": resp.model_spec.name, "signature_name": "",
                              "version": str(resp.model_spec.version.value)},
               "metadata": {"signature_def": json_format.MessageToDict(
                   sdm, preserving_proto_field_name=True)}}
        if "labtf" in resp.metadata:
            extra = struct_pb2.Struct()
            resp.metadata["labtf"].Unpack(extra)
            out["labtf"] = json_format.MessageToDict(extra)
        return out


def grpc_predict(target: str, model: str, images: list[bytes], timeout: float = 30.0,
                 version: int | None = None, signature: str = "serving_default") -> dict:
    """Predict encoded images over TF Serving's gRPC API (port 8500) with the official stubs.

    Args:
        target: ``HOST:PORT``.
        model: model name.
        images: encoded images (JPEG/PNG/... bytes).
        timeout: seconds.
        version: a specific version [latest].
        signature: signature name.

    Returns:
        ``{output_name: numpy array}``.

    Raises:
        ServingError: the call failed (gRPC status in the message, HTTP-like ``status``).
        LabtfError: ``tensorflow-serving-api`` or ``grpcio`` is not installed.
    """
    conn = _Grpc(target, model, version, timeout)
    try:
        return conn.predict(images, signature)
    finally:
        conn.close()


__all__ = ["Client", "ServedPrediction", "ServingError", "grpc_predict"]
