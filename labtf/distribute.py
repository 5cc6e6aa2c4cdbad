"""Distribution strategies, chosen by name (``default``, ``mirrored``, ``cpu2``, ``multiworker``).

``mirrored`` is tf.distribute.MirroredStrategy over the local GPUs (on the JAX
backend, keras.distribution.DataParallel). ``cpu2`` splits the CPU into two
logical devices and mirrors over them: it exercises the multi-replica path on a
machine without GPUs, and must be chosen before TensorFlow runs anything.
``multiworker`` is tf.distribute.MultiWorkerMirroredStrategy over the processes
named in ``TF_CONFIG`` (:func:`set_cluster` writes it from ``host:port,...``);
worker 0 is the chief. It is TensorFlow-only.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from dataclasses import dataclass

import keras

from labtf.config import STRATEGIES, check_choice
from labtf.errors import LabtfError

log = logging.getLogger(__name__)

_ADDRESS = re.compile(r"^[A-Za-z0-9_.\-]+:\d{1,5}$|^\[[0-9A-Fa-f:]+\]:\d{1,5}$")


@dataclass(frozen=True)
class Worker:
    """This process's place in a multi-worker job (index 0 is the chief)."""

    index: int = 0
    count: int = 1

    @property
    def chief(self) -> bool:
        """Whether this process writes the run folder."""
        return self.index == 0


def set_cluster(cluster: str, worker_index: int) -> dict:
    """Write ``TF_CONFIG`` for worker ``worker_index`` of ``cluster`` (``host:port,host:port``).

    Returns:
        The TF_CONFIG dict.

    Raises:
        LabtfError: a malformed address or an index outside the cluster.
    """
    hosts = [h.strip() for h in cluster.split(",") if h.strip()]
    bad = [h for h in hosts if not _ADDRESS.match(h) or not 0 < int(h.rsplit(":", 1)[1]) < 65536]
    if not hosts or bad:
        raise LabtfError(f"--cluster: '{', '.join(bad) or cluster}' is not host:port; pass every "
                         "worker's address, e.g. --cluster 10.0.0.1:12345,10.0.0.2:12345")
    if len(set(hosts)) != len(hosts):
        raise LabtfError(f"--cluster: an address appears twice in {cluster}")
    if not 0 <= worker_index < len(hosts):
        raise LabtfError(f"--worker-index {worker_index} is outside the cluster of {len(hosts)} "
                         f"worker(s); use 0..{len(hosts) - 1}")
    tf_config = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": worker_index}}
    os.environ["TF_CONFIG"] = json.dumps(tf_config)
    return tf_config


def worker(name: str) -> Worker:
    """This process's role for strategy ``name``, read from ``TF_CONFIG`` (no TensorFlow).

    Raises:
        LabtfError: ``multiworker`` without a usable TF_CONFIG.
    """
    if name != "multiworker":
        return Worker()
    raw = os.environ.get("TF_CONFIG", "")
    try:
        tf_config = json.loads(raw)
        workers = list(tf_config["cluster"]["worker"]) + list(tf_config["cluster"].get("chief", []))
        task = tf_config["task"]
        index = int(task["index"]) + (0 if task["type"] == "chief" or
                                      "chief" not in tf_config["cluster"] else 1)
    except (ValueError, KeyError, TypeError):
        raise LabtfError("strategy multiworker needs the cluster: pass --cluster host:port,host:port "
                         "--worker-index I (or set TF_CONFIG)") from None
    if not 0 <= index < len(workers):
        raise LabtfError(f"TF_CONFIG: task index {index} is outside the cluster of {len(workers)}")
    return Worker(index, len(workers))


@contextlib.contextmanager
def lost_worker_errors(me: Worker):
    """Turn TensorFlow's abort when a peer worker dies into one LabtfError line.

    Raises:
        LabtfError: a collective op was aborted because a worker stopped.
    """
    if me.count == 1:
        yield
        return
    import tensorflow as tf

    try:
        yield
    except (tf.errors.UnavailableError, tf.errors.AbortedError,
            tf.errors.DeadlineExceededError) as exc:
        lost = sorted(set(re.findall(r"/job:\w+/replica:\d+/task:(\d+)\s*$", str(exc), re.M)))
        who = f"worker {', '.join(lost)} stopped" if lost else \
            f"a worker stopped or cannot be reached ({str(exc).splitlines()[0][:160]})"
        raise LabtfError(f"worker {me.index}: {who}; the job cannot go on without it. Restart "
                         "every worker with the same command plus --resume") from None


def strategy_scope(name: str):
    """Return ``(scope, replicas)`` for the named strategy.

    ``scope()`` gives a fresh context manager each call (a strategy scope can be
    entered once per context object). ``multiworker`` blocks until every worker
    of the cluster has started.

    Raises:
        LabtfError: an unknown name, or a strategy that needs a fresh process.
    """
    check_choice("strategy", name, STRATEGIES)
    if name == "default":
        return contextlib.nullcontext, 1
    if keras.backend.backend() != "tensorflow":
        if name == "multiworker":
            raise LabtfError("strategy multiworker is TensorFlow-only; run it with "
                             "KERAS_BACKEND=tensorflow (or use --strategy mirrored on JAX)")
        devices = keras.distribution.list_devices()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        return contextlib.nullcontext, len(devices)
    import tensorflow as tf

    if name == "cpu2":
        cpus = tf.config.list_physical_devices("CPU")
        try:
            tf.config.set_logical_device_configuration(
                cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
        except RuntimeError:
            if len(tf.config.list_logical_devices("CPU")) < 2:
                raise LabtfError("strategy cpu2 must be chosen before TensorFlow starts; "
                                 "run it in a fresh process") from None
        devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
        strategy = tf.distribute.MirroredStrategy(devices)
    elif name == "multiworker":
        me = worker(name)
        log.info("worker %d of %d: waiting for the cluster", me.index, me.count)
        _patient_heartbeats(tf)
        try:
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
        except (RuntimeError, ValueError) as exc:
            raise LabtfError(f"strategy multiworker could not start ({str(exc).splitlines()[0]}); "
                             "run it in a fresh process") from None
    else:
        strategy = tf.distribute.MirroredStrategy()
    log.info("strategy %s: %d replica(s)", name, strategy.num_replicas_in_sync)
    return strategy.scope, strategy.num_replicas_in_sync


#: Seconds without a heartbeat before a worker counts as dead. TensorFlow's default
#: (10 s) declared a live worker dead on a loaded 2-core machine while it compiled.
HEARTBEAT_TIMEOUT_S = 120


def _patient_heartbeats(tf) -> None:
    """Configure TensorFlow's coordination service as the strategy would, with a longer timeout.

    Uses TensorFlow internals (there is no public option); if they moved, the
    strategy configures its defaults and this logs why at debug level.
    """
    try:
        from tensorflow.python.distribute import collective_all_reduce_strategy as mwms
        from tensorflow.python.distribute import multi_worker_util

        coordination_config_pb2 = mwms.coordination_config_pb2  # where TF itself found it
        from tensorflow.python.eager import context

        if context.context().coordination_service is not None:
            return
        spec = tf.distribute.cluster_resolver.TFConfigClusterResolver().cluster_spec()
        jobs = [coordination_config_pb2.CoordinatedJob(name=job, num_tasks=spec.num_tasks(job))
                for job in ("chief", "worker") if job in spec.jobs]
        context.context().configure_coordination_service(
            service_type="standalone", service_leader=multi_worker_util.coordination_leader(spec),
            coordinated_jobs=jobs, heartbeat_timeout_in_ms=HEARTBEAT_TIMEOUT_S * 1000)
    except (ImportError, AttributeError, TypeError, ValueError) as exc:
        log.debug("coordination service left at TensorFlow's defaults: %s", exc)


def shard_by_data(dataset):
    """Shard ``dataset`` across workers by element (it reads no files to shard by).

    Every worker must build the same dataset with the same seed; each keeps its
    share of every global batch.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def fit_multiworker(model: keras.Model) -> None:
    """Let ``model.fit`` run under MultiWorkerMirroredStrategy (keras-team/keras#20585).

    Keras 3's TensorFlow trainer has two faults with that strategy, both in
    reductions across workers: it builds the model on a first batch reduced with
    ``strategy.reduce("MEAN", batch)``, which cannot reduce a nested batch, and
    it averages each step's scalar logs with ``axis=0``, which a scalar lacks.
    This builds on the local part of the first batch (same shapes) and averages
    scalar logs over the replicas of all workers (``axis=None``). Nothing
    changes where Keras no longer has these hooks.
    """
    import tensorflow as tf
    from keras import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    strategy = model.distribute_strategy

    def local(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    if hasattr(model, "_symbolic_build"):
        def build(iterator=None, data_batch=None):
            if iterator is not None:
                for _, _, it in iterator:
                    data_batch = tree.map_structure(local, next(it))
                    break
            with strategy.scope():
                model._symbolic_build(data_batch=data_batch)

        model._maybe_symbolic_build = build
    original = getattr(tf_trainer, "reduce_per_replica", None)
    if original is None or getattr(original, "labtf_multiworker", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        if reduction not in ("auto", "mean") or \
                not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return original(values, strategy, reduction)

        def mean(v):
            if getattr(local(v), "shape", None) is not None and local(v).shape.rank == 0:
                return strategy.reduce("MEAN", v, axis=None)
            return original(v, strategy, reduction)

        return tree.map_structure(mean, values)

    reduce_per_replica.labtf_multiworker = True
    tf_trainer.reduce_per_replica = reduce_per_replica
