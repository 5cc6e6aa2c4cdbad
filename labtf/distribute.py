"""Distribution strategies, chosen by name (``default``, ``mirrored``, ``cpu2``).

``mirrored`` is tf.distribute.MirroredStrategy over the local GPUs (on the JAX
backend, keras.distribution.DataParallel). ``cpu2`` splits the CPU into two
logical devices and mirrors over them: it exercises the multi-replica path on a
machine without GPUs, and must be chosen before TensorFlow runs anything.
"""
from __future__ import annotations

import contextlib
import logging

import keras

from labtf.config import STRATEGIES, check_choice
from labtf.errors import LabtfError

log = logging.getLogger(__name__)


def strategy_scope(name: str):
    """Return ``(scope, replicas)`` for the named strategy.

    ``scope()`` gives a fresh context manager each call (a strategy scope can be
    entered once per context object).
    """
    check_choice("strategy", name, STRATEGIES)
    if name == "default":
        return contextlib.nullcontext, 1
    if keras.backend.backend() != "tensorflow":
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
    else:
        strategy = tf.distribute.MirroredStrategy()
    log.info("strategy %s: %d replica(s)", name, strategy.num_replicas_in_sync)
    return strategy.scope, strategy.num_replicas_in_sync
