"""labtf's command line: thin click commands over the library.

TensorFlow is imported only inside commands, so ``labtf --help`` is instant.
A user mistake (LabtfError) prints one line and exits with status 2.
"""
from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path

import click

from labtf import LabtfError, __version__


def _quiet_tf() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def user_errors(fn):
    """Turn LabtfError into one 'error: ...' line and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _quiet_tf()
        try:
            return fn(*args, **kwargs)
        except LabtfError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="labtf")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """labtf: explainable, edge-deployable image classification."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="labtf: %(message)s", stream=sys.stderr)


@main.command()
@click.argument("data")
@click.option("--backbone", default="efficientnet_lite0", show_default=True,
              help="Registry name; see 'labtf backbones'.")
@click.option("--weights", default="imagenet", show_default=True, help="imagenet or none.")
@click.option("--epochs", default=8, show_default=True, help="Head-only epochs (stage 1).")
@click.option("--fine-tune-epochs", default=4, show_default=True,
              help="Epochs with the top blocks unfrozen (stage 2; 0 skips).")
@click.option("--fine-tune-blocks", default=2, show_default=True)
@click.option("--batch-size", default=32, show_default=True)
@click.option("--image-size", type=int, default=None, help="Square input side [backbone's].")
@click.option("--resize", default="crop", show_default=True,
              help="crop (centre crop), pad (white letterbox) or squash.")
@click.option("--mixed-precision", default="float32", show_default=True,
              help="float32, mixed_float16 (GPU) or mixed_bfloat16.")
@click.option("--strategy", default="default", show_default=True,
              help="default, mirrored (all GPUs) or cpu2 (two logical CPUs, for testing).")
@click.option("--seed", default=0, show_default=True)
@click.option("--test-fraction", default=0.18, show_default=True)
@click.option("--val-fraction", default=0.1, show_default=True)
@click.option("--patience", "early_stopping_patience", default=3, show_default=True,
              help="EarlyStopping patience in epochs (0: off).")
@click.option("--split-file", default=None,
              help="Split manifest to write/reuse [DATA/labtf_split.csv].")
@click.option("--no-augment", is_flag=True, help="Switch training augmentation off.")
@click.option("--resume", is_flag=True, help="Continue a killed run in --out.")
@click.option("--out", default="runs/latest", show_default=True, help="Run folder (must be new).")
@user_errors
def train(data, out, resume, no_augment, **opts):
    """Fine-tune a backbone on DATA (class folders, CSV manifest or tfds:NAME)."""
    from labtf.config import TrainConfig
    from labtf.training import train as do_train

    config = TrainConfig(data=data, augment=not no_augment, **opts)
    run = do_train(config, out, resume=resume)
    click.echo(f"run saved: {run.path}")


@main.command()
@click.argument("run")
@click.argument("data", required=False)
@click.option("--top-k", default=3, show_default=True)
@user_errors
def evaluate(run, data, top_k):
    """Evaluate RUN on its test split, or on DATA; writes metrics and the confusion table."""
    from labtf.evaluation import evaluate as do_eval
    m = do_eval(run, data, k=top_k)
    click.echo((Path(run) / "confusion.md").read_text())
    click.echo(f"accuracy {100 * m['accuracy']:.2f}%  top-{m['top_k']} "
               f"{100 * m['top_k_accuracy']:.2f}%  on {m['n_test']} images")


@main.command()
@click.argument("artifact")
@click.argument("images", nargs=-1, required=True)
@click.option("--top-k", default=1, show_default=True)
@user_errors
def predict(artifact, images, top_k):
    """Label IMAGES with a run (or exported model); prints "label": confidence."""
    from labtf.predict import open_predictor, predict_files

    results = predict_files(open_predictor(artifact), list(images), top_k)
    failed = 0
    for r in results:
        if r.error:
            failed += 1
            click.echo(f"error: {r.error}", err=True)
            continue
        tops = "  ".join(f'"{label}": {p:.2f}' for label, p in r.top)
        click.echo(f"{r.path}\t{tops}")
    if failed:
        click.echo(f"{failed} of {len(results)} image(s) could not be read", err=True)
        sys.exit(1)


@main.command()
def backbones():
    """List the registered backbones."""
    from labtf.backbones import BACKBONES

    click.echo(f"{'name':20} {'input':>5}  {'prep':6} {'weights':15} summary")
    for s in BACKBONES.values():
        click.echo(f"{s.name:20} {s.input_size:>5}  {s.preprocessing:6} {s.weight_source:15} "
                   f"{s.summary}")


@main.command()
@click.option("--out", default="runs/demo", show_default=True, help="Run folder (must be new).")
@click.option("--resume", is_flag=True, help="Continue a killed demo run.")
@click.option("--epochs", type=int, default=None, help="Override the head epochs.")
@click.option("--fine-tune-epochs", type=int, default=None, help="Override stage-2 epochs.")
@user_errors
def demo(out, resume, epochs, fine_tune_epochs):
    """Train, evaluate and save the embedded default run (EfficientNet-Lite0)."""
    from labtf.demo import run_demo

    overrides = {k: v for k, v in {"epochs": epochs, "fine_tune_epochs": fine_tune_epochs}.items()
                 if v is not None}
    m = run_demo(out, resume=resume, **overrides)
    click.echo((Path(out) / "confusion.md").read_text())
    click.echo(f"demo: test accuracy {100 * m['accuracy']:.2f}% on {m['n_test']} images; "
               f"run in {out}")


if __name__ == "__main__":
    main()
