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


def without_noise(data: bytes) -> bytes:
    """``data`` without the lines :data:`NOISE` matches."""
    lines = data.split(b"\n")
    return b"\n".join(x for x in lines if NOISE.fullmatch(x.rstrip(b"\r")) is None)


@contextlib.contextmanager
def filtered_fd2():
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
            kept = without_noise(tmp.read())
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
    try:
        if sys.stderr.fileno() != 2:
            return False
    except (AttributeError, OSError, ValueError):     # replaced streams (tests, IDEs)
        return False
    sys.meta_path.insert(0, _QuietImport())
    return True
