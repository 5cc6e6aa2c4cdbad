"""Keep TensorFlow's native import-time lines off the command line's stderr.

Importing TensorFlow 2.21 prints, from C++, before absl's logging is set up::

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 00:00:1795772154.696843   27919 port.cc:153] oneDNN custom operations are on. ...

twice (two libraries). ``TF_CPP_MIN_LOG_LEVEL`` does not reach them, so every
``labtf`` command that loads TensorFlow started with four lines of noise. They
are printed only while ``import tensorflow`` runs, so :func:`quiet_tensorflow_import`
hooks that one import: file descriptor 2 goes to a temporary file while it runs
and afterwards everything but exactly these lines is written to the real stderr
(in order; also when the import fails). Nothing else is touched. The CLI installs
it only when stderr is a real file descriptor; ``LABTF_RAW_STDERR=1`` turns it off.
:func:`quiet_native` does the same around a TF-Lite conversion or interpreter set-up
(XNNPACK notice, ``fully_quantize: ...``); ``-v`` shows everything.
"""
from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile

#: Whole lines dropped (bytes, without the newline).
NOISE = re.compile(
    rb"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|I\d{4} [\d:.]+ +\d+ (?:port|cpu_feature_guard)\.cc:\d+\] .*"
    rb"|To enable the following instructions: .* rebuild TensorFlow with the appropriate "
    rb"compiler flags\.")

#: Lines the TF-Lite converter and interpreter print from C++ on every use (dropped only
#: inside :func:`quiet_native`): the XNNPACK notice, the quantizer's settings, absl
#: INFO/WARNING lines such as "Ignored output_format".
NATIVE_NOISE = re.compile(
    NOISE.pattern
    + rb"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU\."
    + rb"|fully_quantize: \d+, inference_type: \d+, input_inference_type: \w+, "
      rb"output_inference_type: \w+"
    + rb"|[IW]\d{4} [\d:.]+ +\d+ [\w.]+\.cc:\d+\] .*")


def without_noise(data: bytes, noise: re.Pattern = NOISE) -> bytes:
    """``data`` without the lines ``noise`` matches."""
    lines = data.split(b"\n")
    return b"\n".join(x for x in lines if noise.fullmatch(x.rstrip(b"\r")) is None)


def _real_fd2() -> bool:
    try:
        return sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):     # replaced streams (tests, IDEs)
        return False


@contextlib.contextmanager
def quiet_native():
    """Drop :data:`NATIVE_NOISE` lines that C++ code prints to fd 2 inside the block.

    A no-op with ``-v`` (DEBUG logging), ``LABTF_RAW_STDERR=1`` or a replaced stderr.
    Meant for short single-threaded calls (a conversion, an interpreter's set-up).
    """
    import logging

    if (os.environ.get("LABTF_RAW_STDERR") or not _real_fd2()
            or logging.getLogger().isEnabledFor(logging.DEBUG)):
        yield
        return
    with filtered_fd2(NATIVE_NOISE):
        yield


@contextlib.contextmanager
def filtered_fd2(noise: re.Pattern = NOISE):
    """Send file descriptor 2 to a temporary file; replay it without the noise on exit."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = without_noise(tmp.read(), noise)
            if kept.strip():
                os.write(2, kept)


class _QuietImport(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` once and runs its module code inside :func:`filtered_fd2`."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path[:] = [f for f in sys.meta_path if f is not self]
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            with filtered_fd2():
                run(module)

        spec.loader.exec_module = exec_module
        return spec


def quiet_tensorflow_import() -> bool:
    """Hook the first ``import tensorflow`` of this process; returns whether it is hooked."""
    if "tensorflow" in sys.modules or os.environ.get("LABTF_RAW_STDERR"):
        return False
    if any(isinstance(f, _QuietImport) for f in sys.meta_path):
        return True
    if not _real_fd2():
        return False
    sys.meta_path.insert(0, _QuietImport())
    return True
