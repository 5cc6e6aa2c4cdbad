"""labtf: explainable, edge-deployable image classification on Keras 3.

Importing :mod:`labtf` is cheap: TensorFlow and Keras are imported lazily by
the submodules that need them, so ``labtf --help`` stays instant.
"""

__version__ = "0.1.0"

from labtf.errors import LabtfError  # noqa: E402,F401
