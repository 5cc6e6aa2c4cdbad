"""The 1000 ImageNet-1k class names, offline, in the standard class-index order.

``tensorflow_datasets`` ships the list (the usual "tench, Tinca tinca" ...
"toilet tissue, ..." names, index 281 "tabby, tabby cat", 967 "espresso") as
``IMAGENET_LABELS_LIST`` in its SI-Score dataset module; older releases also
had ``image_classification/imagenet2012_labels.txt``, which holds WordNet ids
(``n01440764`` ...), not names, and is used only as a last resort. The files
are read from the installed package without importing it (no TensorFlow).
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import logging
from pathlib import Path

from labtf.errors import LabtfError

logger = logging.getLogger(__name__)

_NAME_SOURCES = ("datasets/siscore/labels.py", "image_classification/siscore/labels.py",
                 "image_classification/siscore_labels.py")
_WNID_SOURCES = ("image_classification/imagenet2012_labels.txt", "datasets/imagenet2012/labels.txt")


def _tfds_dirs() -> list[Path]:
    try:
        spec = importlib.util.find_spec("tensorflow_datasets")
    except (ImportError, ValueError):
        spec = None
    return [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []


def _names_from_python(path: Path) -> list[str] | None:
    """``IMAGENET_LABELS_LIST = [...]`` from a module's source, by literal parsing."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == "IMAGENET_LABELS_LIST"):
            value = ast.literal_eval(node.value)
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return value
    return None


@functools.lru_cache(maxsize=1)
def _load() -> tuple[str, ...]:
    for root in _tfds_dirs():
        for rel in _NAME_SOURCES:
            path = root / rel
            if path.is_file():
                names = _names_from_python(path)
                if names and len(names) == 1000:
                    logger.debug("ImageNet class names from %s", path)
                    return tuple(names)
        for rel in _WNID_SOURCES:
            path = root / rel
            if path.is_file():
                ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
                if len(ids) == 1000:
                    logger.warning("only WordNet ids are available for ImageNet classes (%s)", path)
                    return tuple(ids)
    raise LabtfError("ImageNet class names come from the PyPI package tensorflow-datasets; "
                     "install it with: pip install tensorflow-datasets")


def imagenet_labels(short: bool = False) -> list[str]:
    """The 1000 ImageNet-1k class names, index i = class i of the classifiers.

    Args:
        short: Keep only the first synonym ("tabby" instead of "tabby, tabby cat").

    Returns:
        A new list of 1000 strings.

    Raises:
        LabtfError: If ``tensorflow_datasets`` (which ships the list) is missing.
    """
    names = _load()
    return [n.split(",")[0].strip() for n in names] if short else list(names)
