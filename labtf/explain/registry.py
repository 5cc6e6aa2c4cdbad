"""The explanation-method registry: one :class:`Method` line per method name.

Pure Python (no numpy, no TensorFlow): ``labtf --help`` and the CLI's choices read
it for free. Each entry names its implementation as ``"module:function"`` (imported
on first use) or holds the function itself (a method registered at run time).

A method function takes ``(explainer, x, classes)`` -- a
:class:`labtf.explain.core.Explainer`, a float32 batch (N, S, S, 3) in 0..255
and one target class index per image -- and returns a
:class:`labtf.explain.core.MapResult` with (N, S, S) maps in 0..1.

To add a method: write its function (e.g. in :mod:`labtf.explain.methods`) and add
one line to :data:`METHODS`; ``labtf explain --method``, ``labtf explain-eval
--methods``, the default explain-eval set and the tests read this table.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from labtf.errors import LabtfError


@dataclass(frozen=True)
class Method:
    """One explanation method.

    Attributes:
        function: ``"module:function"`` imported on first use, or the function itself.
        evaluate: in ``labtf explain-eval``'s default set.
    """

    function: str | Callable
    evaluate: bool = True

    def load(self) -> Callable:
        """The method function (imports its module the first time)."""
        if callable(self.function):
            return self.function
        module, _, name = self.function.partition(":")
        return getattr(importlib.import_module(module), name)


_IMPL = "labtf.explain.methods"
#: The reference map every explain-eval score is shown beside; not offered by ``labtf explain``.
BASELINE = "random"

#: Method name -> :class:`Method`. The order is the order of the CLI's choices and of
#: explain-eval's default set.
METHODS: dict[str, Method] = {
    "gradcam": Method(f"{_IMPL}:gradcam"),
    "gradcam++": Method(f"{_IMPL}:gradcam_plus_plus"),
    "layercam": Method(f"{_IMPL}:layercam"),
    "scorecam": Method(f"{_IMPL}:scorecam", evaluate=False),  # too slow for a CPU batch
    "faster-scorecam": Method(f"{_IMPL}:faster_scorecam"),
    "saliency": Method(f"{_IMPL}:saliency"),
    "smoothgrad": Method(f"{_IMPL}:smoothgrad"),
    "guided": Method(f"{_IMPL}:guided_backprop"),
    "guided-gradcam": Method(f"{_IMPL}:guided_gradcam"),
    BASELINE: Method(f"{_IMPL}:random_map", evaluate=False),
}


def check_method(name: str) -> str:
    """Return ``name`` if it is a registered method.

    Raises:
        LabtfError: unknown name; the message lists the valid ones.
    """
    if name not in METHODS:
        raise LabtfError(f"unknown method '{name}'; choose one of: {', '.join(METHODS)}")
    return name


def method_function(name: str) -> Callable:
    """The function of method ``name``.

    Raises:
        LabtfError: unknown name (lists the valid ones).
    """
    return METHODS[check_method(name)].load()


def explain_choices() -> list[str]:
    """Names ``labtf explain --method`` offers (every method but the baseline)."""
    return [n for n in METHODS if n != BASELINE]


def default_eval_methods() -> list[str]:
    """Names ``labtf explain-eval`` scores when ``--methods`` is not given."""
    return [n for n, m in METHODS.items() if m.evaluate and n != BASELINE]
