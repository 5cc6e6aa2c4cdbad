"""Explanations: saliency maps (tf-keras-vis + guided backprop), renders, faithfulness, report.

Imports TensorFlow lazily (inside functions), like the rest of labtf.
"""
from labtf.explain.core import METHODS, Explainer, Explanation, MapResult  # noqa: F401
