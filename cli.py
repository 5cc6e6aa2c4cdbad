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
@click.option("--saliency", default=None, metavar="DIR",
              help="Write a CAM heat-map overlay PNG per image into DIR.")
@user_errors
def predict(artifact, images, top_k, saliency):
    """Label IMAGES with a run or exported model (SavedModel, .tflite, .onnx, .engine)."""
    from labtf.predict import open_predictor, predict_files

    predictor = open_predictor(artifact)
    results = predict_files(predictor, list(images), top_k, with_cam=bool(saliency))
    failed = 0
    for r in results:
        if r.error:
            failed += 1
            click.echo(f"error: {r.error}", err=True)
            continue
        tops = "  ".join(f'"{label}": {p:.2f}' for label, p in r.top)
        click.echo(f"{r.path}\t{tops}")
        if saliency:
            from labtf.images import load_rgb, to_square
            from labtf.inference import save_overlay

            img = to_square(load_rgb(r.path), predictor.image_size, predictor.resize)
            out = save_overlay(img, r.cam, Path(saliency) / f"{Path(r.path).stem}_cam.png")
            click.echo(f"  saliency: {out}")
    if failed:
        click.echo(f"{failed} of {len(results)} image(s) could not be read", err=True)
        sys.exit(1)


def _export_choices(field: str) -> list[str]:
    """Choices from the exporters.FORMATS table (imports no TensorFlow)."""
    from exporters import FORMATS

    if field == "name":
        return list(FORMATS)
    return sorted({q for f in FORMATS.values() for q in f.quantize}, key=["none", "float16", "int8"].index)


@main.command(name="export")
@click.argument("run")
@click.option("--format", "fmt", required=True, type=click.Choice(_export_choices("name")),
              help="Artifact format (exporters.FORMATS).")
@click.option("--quantize", default="none", show_default=True,
              type=click.Choice(_export_choices("quantize")),
              help="tflite: none|float16|int8; tensorrt: float16|int8.")
@click.option("--io-type", default="float32", show_default=True,
              type=click.Choice(["float32", "uint8", "int8"]), help="int8 tflite input/output type.")
@click.option("--out", required=True, help="Output folder (artifacts + parity.json/.md).")
@click.option("--name", default=None, help="saved_model: TF Serving model name [run folder name].")
@click.option("--version", "version", default=1, show_default=True, help="saved_model: version.")
@click.option("--overwrite", is_flag=True, help="Replace an existing artifact.")
@click.option("--no-parity", is_flag=True, help="Skip the parity report against Keras.")
@user_errors
def export_cmd(run, fmt, quantize, io_type, out, name, version, overwrite, no_parity):
    """Export RUN for deployment and check it against Keras (parity.json/.md in --out)."""
    from exporters import export
    from exporters.parity import markdown_table, parity_report, reference, write_parity
    from labtf.run import Run

    opts = {"io_type": io_type} if fmt == "tflite" else {}
    if fmt == "saved_model":
        opts = {"name": name, "version": version}
    artifact = export(run, fmt, out, quantize=quantize, overwrite=overwrite, **opts)
    click.echo(f"exported: {artifact}")
    if not no_parity:
        report = parity_report(artifact, reference(Run.open(run)))
        write_parity(out, report)
        click.echo(markdown_table([report]))


@main.command()
@click.argument("artifacts", nargs=-1, required=True)
@click.option("--run", "run_path", default=None,
              help="Run whose test split gives accuracy [the artifacts' source run].")
@click.option("--runs", default=30, show_default=True, help="Timed batch-1 calls per artifact.")
@click.option("--batch-size", default=16, show_default=True, help="Batch for throughput.")
@user_errors
def benchmark(artifacts, run_path, runs, batch_size):
    """Latency, throughput, size and accuracy of ARTIFACTS side by side."""
    from labtf.inference import benchmark_artifacts

    click.echo(benchmark_artifacts(list(artifacts), run_path, runs, batch_size))


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


EXPLAIN_METHODS = ("gradcam", "gradcam++", "scorecam", "faster-scorecam", "layercam", "saliency",
                   "smoothgrad", "guided", "guided-gradcam")


@main.command()
@click.argument("run")
@click.argument("images", nargs=-1, required=True)
@click.option("--method", default="gradcam", show_default=True,
              type=click.Choice(EXPLAIN_METHODS), help="Saliency method.")
@click.option("--class", "class_name", default=None, help="Explain this class [top prediction].")
@click.option("--layer", default=None, help="CAM target layer [the run's cam_layer].")
@click.option("--panel", is_flag=True,
              help="Also write image | Grad-CAM | Guided Backprop | Guided Grad-CAM panels.")
@click.option("--out", default="explanations", show_default=True,
              help="Output folder (existing files are never overwritten).")
@user_errors
def explain(run, images, method, class_name, layer, panel, out):
    """Saliency maps (.npy), overlays (.png) and a contact sheet for IMAGES."""
    from labtf.explain.batch import explain_files

    results = explain_files(run, list(images), method, class_name, layer, out, panel)
    failed = [r for r in results if r.error]
    for r in results:
        if r.error:
            click.echo(f"error: {r.error}", err=True)
        else:
            click.echo(f"{r.path}\t{r.label} {r.confidence:.2f}\t{r.outputs[1]}")
    if failed:
        click.echo(f"{len(failed)} of {len(results)} image(s) could not be read", err=True)
        sys.exit(1)


@main.command("explain-eval")
@click.argument("run")
@click.argument("data", required=False)
@click.option("--masks", default=None, help="Folder of object masks named like the images.")
@click.option("--methods", default=None,
              help="Comma-separated methods [gradcam,gradcam++,layercam,faster-scorecam,"
                   "saliency,smoothgrad,guided,guided-gradcam].")
@click.option("--steps", default=16, show_default=True, help="Deletion/insertion steps.")
@click.option("--limit", type=int, default=None, help="Evaluate at most N images.")
@click.option("--sanity-images", default=6, show_default=True,
              help="Images for the parameter-randomization test (0: skip).")
@click.option("--out", default=None, help="Folder for explain_eval.md/.json [RUN].")
@user_errors
def explain_eval(run, data, masks, methods, steps, limit, sanity_images, out):
    """Faithfulness of the maps: deletion/insertion AUC, randomization, pointing game."""
    from labtf.explain.faithfulness import explain_eval as do_eval
    from labtf.explain.faithfulness import table_markdown

    names = [m.strip() for m in methods.split(",") if m.strip()] if methods else None
    result = do_eval(run, data, names, masks, steps, limit, sanity_images, out)
    click.echo(table_markdown(result))


@main.command()
@click.argument("run")
@click.option("--out", default=None, help="HTML file [RUN/report.html].")
@click.option("--samples", default=8, show_default=True, help="Correct and wrong examples each.")
@user_errors
def report(run, out, samples):
    """One self-contained HTML page: data, curves, confusion table, Grad-CAM examples."""
    from labtf.explain.report import build_report

    click.echo(f"report: {build_report(run, out, samples)}")


if __name__ == "__main__":
    main()
