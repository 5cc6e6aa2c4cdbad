"""A TF Serving model repository: ``<base>/<name>/<version>/`` + ``models.config``.

:func:`write_repository_config` scans ``base`` for models (folders holding
numeric version folders with a ``saved_model.pb``) and writes

* ``models.config``: a ``model_config_list`` text proto with absolute
  ``base_path`` entries and ``model_version_policy { all {} }`` (every exported
  version is served, so ``/versions/<v>`` requests work);
* ``batching.config`` (optional): TF Serving's ``BatchingParameters`` text proto
  for ``--enable_batching``;
* ``SERVING.md``: the exact ``tensorflow_model_server`` and docker command lines.
"""
from __future__ import annotations

import logging
from pathlib import Path

from labtf.fileio import write_text

log = logging.getLogger(__name__)

CONFIG_NAME = "models.config"
BATCHING_NAME = "batching.config"

#: Defaults for the batching file: small batches, short wait (CPU / small device).
BATCHING = {"max_batch_size": 16, "batch_timeout_micros": 5000, "num_batch_threads": 2,
            "max_enqueued_batches": 64}


def find_models(base: str | Path) -> dict[str, list[int]]:
    """``{model_name: sorted versions}`` for every servable model under ``base``."""
    base = Path(base)
    models: dict[str, list[int]] = {}
    if not base.is_dir():
        return models
    for folder in sorted(p for p in base.iterdir() if p.is_dir()):
        versions = sorted(int(v.name) for v in folder.iterdir()
                          if v.is_dir() and v.name.isdigit() and (v / "saved_model.pb").is_file())
        if versions:
            models[folder.name] = versions
    return models


def models_config_text(base: str | Path, models: dict[str, list[int]]) -> str:
    """The ``model_config_list`` text proto for ``models`` under ``base``."""
    base = Path(base).resolve()
    lines = ["# TF Serving --model_config_file, written by labtf (rewritten on every export)",
             "model_config_list {"]
    for name in models:
        lines += ["  config {", f'    name: "{name}"', f'    base_path: "{base / name}"',
                  '    model_platform: "tensorflow"',
                  "    model_version_policy { all {} }", "  }"]
    return "\n".join(lines + ["}"]) + "\n"


def batching_text(params: dict | None = None) -> str:
    """TF Serving ``BatchingParameters`` text proto."""
    p = {**BATCHING, **(params or {})}
    body = [f"{k} {{ value: {int(v)} }}" for k, v in p.items()]
    return "\n".join(body + ["pad_variable_length_inputs: false"]) + "\n"


def command_lines(base: str | Path, batching: bool = False) -> dict[str, str]:
    """The server command lines for a repository (host binary and docker)."""
    base = Path(base).resolve()
    flags = f"--model_config_file={base / CONFIG_NAME} --model_config_file_poll_wait_seconds=60"
    if batching:
        flags += f" --enable_batching=true --batching_parameters_file={base / BATCHING_NAME}"
    return {
        "tensorflow_model_server": f"tensorflow_model_server --port=8500 --rest_api_port=8501 {flags}",
        "docker": f"docker run --rm -p 8500:8500 -p 8501:8501 -v {base}:{base}:ro "
                  f"tensorflow/serving {flags}",
    }


def _write(path: Path, text: str) -> None:
    write_text(path, text)


def write_repository_config(base: str | Path, batching: bool | dict = False) -> Path:
    """(Re)write ``models.config``, ``SERVING.md`` and optionally ``batching.config``.

    Args:
        base: the repository folder (``--serving-base``).
        batching: True (defaults) or a dict of :data:`BATCHING` overrides to
            write ``batching.config``; False leaves an existing one alone.

    Returns:
        The ``models.config`` path.
    """
    base = Path(base)
    models = find_models(base)
    config = base / CONFIG_NAME
    _write(config, models_config_text(base, models))
    if batching:
        _write(base / BATCHING_NAME, batching_text(batching if isinstance(batching, dict) else None))
    cmds = command_lines(base, batching=bool(batching) or (base / BATCHING_NAME).is_file())
    listing = "\n".join(f"- `{n}` versions {', '.join(map(str, v))}" for n, v in models.items())
    first = next(iter(models), "NAME")
    _write(base / "SERVING.md", f"# TF Serving repository\n\n{listing}\n\n```bash\n"
           f"{cmds['tensorflow_model_server']}\n# or\n{cmds['docker']}\n"
           f"curl http://127.0.0.1:8501/v1/models/{first}\n"
           f"labtf predict --server http://127.0.0.1:8501 --model {first} IMAGE...\n```\n")
    log.info("TF Serving config: %s (%d model(s))", config, len(models))
    return config
