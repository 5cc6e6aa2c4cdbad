"""Explanations: saliency maps (tf-keras-vis + guided backprop), renders, faithfulness, report.

Importing this package is cheap (no numpy, no TensorFlow): :data:`METHODS` is the
pure-Python registry, and :class:`Explainer`, :class:`Explanation` and
:class:`MapResult` are loaded from :mod:`labtf.explain.core` on first use.
"""
from labtf.explain.registry import METHODS, Method  # noqa: F401

_CORE = ("Explainer", "Explanation", "MapResult")


def __getattr__(name: str):
    if name in _CORE:
        from labtf.explain import core

        return getattr(core, name)
    raise AttributeError(f"module 'labtf.explain' has no attribute '{name}'")
