"""The embedded default job: train on ``datasets/clipart``, evaluate, save the run."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from labtf.errors import LabtfError

log = logging.getLogger(__name__)

#: The demo trains with labtf train's own defaults (TrainConfig), chosen on the photo-scene
#: benchmark (benchmarks/results/scenes.md); nothing here overrides them.
DEMO_SETTINGS: dict = {}


def embedded_dataset() -> Path:
    """Path of the embedded default dataset (``$LABTF_DATASETS`` or the checkout's datasets/).

    Raises:
        LabtfError: the folder is not there (labtf installed without its source tree).
    """
    root = Path(os.environ.get("LABTF_DATASETS", Path(__file__).resolve().parent.parent / "datasets"))
    path = root / "clipart"
    if not path.is_dir():
        raise LabtfError(f"embedded dataset not found at {path}; install labtf from its source "
                         "checkout (pip install -e .) or set LABTF_DATASETS")
    return path


def run_demo(out: str | Path = "runs/demo", resume: bool = False, **overrides) -> dict:
    """Train, evaluate and save the default run; returns the metrics.

    Args:
        out: run folder.
        resume: continue a killed demo run.
        **overrides: TrainConfig fields to change (e.g. ``epochs=1`` for a smoke test).
    """
    from labtf.config import TrainConfig
    from labtf.evaluation import evaluate
    from labtf.training import train

    config = TrainConfig.from_dict({"data": str(embedded_dataset()), **DEMO_SETTINGS, **overrides})
    run = train(config, out, resume=resume)
    return evaluate(run)
