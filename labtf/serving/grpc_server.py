"""TF Serving's gRPC API in ``labtf serve`` (``--grpc-port``), on grpc.aio.

``tensorflow.serving.PredictionService``: ``Predict`` (signatures
``serving_default`` / ``serving_pixels``, outputs ``probabilities``,
``class_index``, ``label``, ``cam``, ``output_filter``), ``Classify``
(``tf.Example`` with the encoded image under ``image_bytes`` or
``image/encoded``; every class with its score, in index order) and
``GetModelMetadata`` (``signature_def``, plus labtf's classes as a
``google.protobuf.Struct`` under ``labtf``); ``tensorflow.serving.ModelService``:
``GetModelStatus``. ``Regress``, ``MultiInference`` and
``HandleReloadConfigRequest`` answer UNIMPLEMENTED.

Model spec, signatures, limits and outputs are the REST ones
(:mod:`labtf.serving.api`): the same model lookup and version labels, the same
instance cap, body limit (as the largest accepted message), inference timeout
and pending-request limit; failures are gRPC status codes (INVALID_ARGUMENT,
NOT_FOUND, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, ...). It runs in the REST
server's event loop and shares its model and metrics. Needs ``grpcio`` and
``tensorflow-serving-api`` (installed with ``--no-deps``, see README).
"""
from __future__ import annotations

import logging
import time

from labtf.errors import LabtfError
from labtf.serving.api import (GRPC_CODES, check_signature, classify_scores, example_images,
                               label_version, lookup, predict_outputs)
from labtf.serving.protocol import DT_NAMES, RestError

log = logging.getLogger(__name__)

#: Largest answer (an 8-image CAM batch is well below).
MAX_SEND_BYTES = 64 * 1024 * 1024


def _apis():
    try:
        import grpc
        from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                             get_model_status_pb2, model_service_pb2_grpc,
                                             predict_pb2, prediction_service_pb2_grpc)
    except ImportError:
        raise LabtfError("--grpc-port needs 'grpcio' and 'tensorflow-serving-api'; pip install "
                         "--no-deps 'tensorflow-serving-api>=2.21,<2.22'") from None
    return (grpc, classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
            model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc)


def signature_def_map(signatures: dict):
    """labtf's signatures as TF Serving's ``SignatureDefMap`` proto."""
    from tensorflow.core.framework import types_pb2
    from tensorflow_serving.apis import get_model_metadata_pb2

    sdm = get_model_metadata_pb2.SignatureDefMap()
    for sig, (ins, outs) in signatures.items():
        d = sdm.signature_def[sig]
        d.method_name = "tensorflow/serving/predict"
        for kind, tensors in (("in", ins), ("out", outs)):
            for key, t in tensors.items():
                info = (d.inputs if kind == "in" else d.outputs)[key]
                info.name = f"{sig}_{key}:0" if kind == "in" else f"StatefulPartitionedCall:{key}"
                info.dtype = types_pb2.DataType.Value(DT_NAMES[t.dtype])
                for size in t.shape:
                    info.tensor_shape.dim.add(size=size)
    return sdm


def _input_arrays(request, model, sig: str) -> dict:
    """``PredictRequest.inputs`` -> validated numpy arrays (REST's dtype/shape rules)."""
    import tensorflow as tf
    from tensorflow.core.framework import types_pb2

    inputs = model.signatures[sig][0]
    if set(request.inputs) != set(inputs):
        raise RestError(400, f"signature {sig}: expected inputs {sorted(inputs)}, got "
                             f"{sorted(request.inputs)}")
    arrays = {}
    for name, info in inputs.items():
        proto = request.inputs[name]
        want = types_pb2.DataType.Value(DT_NAMES[info.dtype])
        if proto.dtype != want:
            raise RestError(400, f"input '{name}': expects {DT_NAMES[info.dtype]}, got "
                                 f"{types_pb2.DataType.Name(proto.dtype)}")
        try:
            arr = tf.make_ndarray(proto)
        except (TypeError, ValueError) as exc:
            raise RestError(400, f"input '{name}': malformed TensorProto ({exc})") from None
        if arr.ndim != len(info.shape) or any(w not in (-1, g) for w, g in zip(info.shape, arr.shape)):
            raise RestError(400, f"input '{name}': shape {list(arr.shape)} does not match the "
                                 f"signature's {list(info.shape)} (-1 = any)")
        arrays[name] = arr
    return arrays


def _examples(request) -> list[dict]:
    """A ClassificationRequest's tf.Examples -> [{feature: bytes}] (context merged in)."""
    kind = request.input.WhichOneof("kind")
    if kind is None:
        raise RestError(400, "ClassificationRequest.input has no examples")
    if kind == "example_list":
        items, context = request.input.example_list.examples, None
    else:
        items = request.input.example_list_with_context.examples
        context = request.input.example_list_with_context.context

    def feats(example) -> dict:
        out = {}
        for key, f in example.features.feature.items():
            if f.WhichOneof("kind") == "bytes_list" and len(f.bytes_list.value) == 1:
                out[key] = f.bytes_list.value[0]
            else:
                out[key] = None
        return out

    base = feats(context) if context is not None else {}
    examples = [{**base, **feats(e)} for e in items]
    for i, ex in enumerate(examples):
        for key in ("image_bytes", "image/encoded"):
            if key in ex and ex[key] is None:
                raise RestError(400, f"examples[{i}].{key}: expected one bytes_list value")
    return examples


class _Base:
    def __init__(self, model, timeout_s: float, metrics, version_labels: dict) -> None:
        self.model, self.timeout_s = model, timeout_s
        self.metrics, self.labels = metrics, version_labels
        self.grpc = _apis()[0]

    def _resolve(self, spec) -> None:
        which = spec.WhichOneof("version_choice")
        version = None
        if which == "version":
            version = spec.version.value
        elif which == "version_label":
            version = label_version(self.labels, spec.name, spec.version_label)
        lookup(self.model, spec.name, version)

    def _spec(self, out, signature: str = "") -> None:
        out.name = self.model.name
        out.version.value = self.model.version
        if signature:
            out.signature_name = signature

    async def _call(self, endpoint: str, context, fn, request):
        t0, code = time.perf_counter(), "OK"
        if self.metrics is not None:
            self.metrics.inflight.inc()
        try:
            return await fn(request)
        except RestError as exc:
            code = GRPC_CODES.get(exc.status, "INTERNAL")
            await context.abort(self.grpc.StatusCode[code], exc.message)
        except Exception as exc:  # noqa: BLE001  the server keeps serving
            if isinstance(exc, self.grpc.aio.AbortError):
                raise
            code = "INTERNAL"
            log.exception("internal error in gRPC %s", endpoint)
            await context.abort(self.grpc.StatusCode.INTERNAL,
                                f"internal error: {type(exc).__name__}: {exc}")
        finally:
            if self.metrics is not None:
                self.metrics.inflight.dec()
                self.metrics.observe("grpc", endpoint, code, time.perf_counter() - t0)


def _servicers(model, timeout_s: float, metrics, version_labels: dict):
    (grpc, classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
     model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc) = _apis()

    class Prediction(_Base, prediction_service_pb2_grpc.PredictionServiceServicer):
        """PredictionService over the served model."""

        async def Predict(self, request, context):
            return await self._call("predict", context, self._predict, request)

        async def Classify(self, request, context):
            return await self._call("classify", context, self._classify, request)

        async def GetModelMetadata(self, request, context):
            return await self._call("metadata", context, self._metadata, request)

        async def _predict(self, request):
            import tensorflow as tf

            self._resolve(request.model_spec)
            sig = check_signature(self.model, request.model_spec.signature_name)
            outputs = await predict_outputs(self.model, sig,
                                            _input_arrays(request, self.model, sig),
                                            self.timeout_s)
            wanted = list(request.output_filter) or sorted(outputs)
            unknown = sorted(set(wanted) - set(outputs))
            if unknown:
                raise RestError(400, f"output_filter: unknown output(s) {unknown}; outputs: "
                                     f"{sorted(outputs)}")
            resp = predict_pb2.PredictResponse()
            self._spec(resp.model_spec, sig)
            for key in wanted:
                resp.outputs[key].CopyFrom(tf.make_tensor_proto(outputs[key]))
            return resp

        async def _classify(self, request):
            self._resolve(request.model_spec)
            check_signature(self.model, request.model_spec.signature_name, "classify")
            blobs = example_images(_examples(request))
            scores = await classify_scores(self.model, blobs, self.timeout_s)
            resp = classification_pb2.ClassificationResponse()
            self._spec(resp.model_spec, request.model_spec.signature_name or "serving_default")
            for row in scores:
                c = resp.result.classifications.add()
                for label, p in zip(self.model.classes, row):
                    c.classes.add(label=label, score=float(p))
            return resp

        async def _metadata(self, request):
            from google.protobuf import struct_pb2

            self._resolve(request.model_spec)
            fields = list(request.metadata_field)
            bad = [f for f in fields if f not in ("signature_def", "labtf")]
            if not fields or bad:
                raise RestError(400, f"metadata_field must list 'signature_def' (or 'labtf'); "
                                     f"got {fields or 'none'}")
            resp = get_model_metadata_pb2.GetModelMetadataResponse()
            self._spec(resp.model_spec)
            if "signature_def" in fields:
                resp.metadata["signature_def"].Pack(signature_def_map(self.model.signatures))
            if "labtf" in fields:
                extra = struct_pb2.Struct()
                extra.update(self.model.info())
                resp.metadata["labtf"].Pack(extra)
            return resp

    class Models(_Base, model_service_pb2_grpc.ModelServiceServicer):
        """ModelService: status of the served model."""

        async def GetModelStatus(self, request, context):
            return await self._call("status", context, self._status, request)

        async def _status(self, request):
            self._resolve(request.model_spec)
            resp = get_model_status_pb2.GetModelStatusResponse()
            s = resp.model_version_status.add()
            s.version = self.model.version
            s.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
            return resp

    return (Prediction(model, timeout_s, metrics, version_labels),
            Models(model, timeout_s, metrics, version_labels),
            prediction_service_pb2_grpc, model_service_pb2_grpc)


async def start_grpc(model, host: str, port: int, *, max_body_mb: float = 10.0,
                     timeout_s: float = 30.0, metrics=None, version_labels: dict | None = None):
    """Start the gRPC server in the running event loop.

    Args:
        model: the opened :class:`~labtf.serving.engine.EdgeModel` (already started).
        host, port: where to listen (port 0: any free port).
        max_body_mb: largest request message (as REST's body limit).
        timeout_s: inference timeout.
        metrics: the server's :class:`~labtf.serving.metrics.ServingMetrics` (or None).
        version_labels: version label -> version.

    Returns:
        (the ``grpc.aio`` server, the bound port).

    Raises:
        LabtfError: gRPC packages missing, or the port cannot be bound.
    """
    grpc = _apis()[0]
    pred, models, pred_grpc, model_grpc = _servicers(model, timeout_s, metrics,
                                                     dict(version_labels or {}))
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", int(max_body_mb * 1e6)),
        ("grpc.max_send_message_length", MAX_SEND_BYTES)],
        maximum_concurrent_rpcs=max(1, int(model.max_pending)))
    pred_grpc.add_PredictionServiceServicer_to_server(pred, server)
    model_grpc.add_ModelServiceServicer_to_server(models, server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise LabtfError(f"cannot listen for gRPC on {address}: {exc}") from None
    if not bound:
        raise LabtfError(f"cannot listen for gRPC on {address} (port in use?)")
    await server.start()
    return server, bound


__all__ = ["signature_def_map", "start_grpc"]
