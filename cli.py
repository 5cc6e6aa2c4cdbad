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
    from labtf.quiet_stderr import quiet_tensorflow_import

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    quiet_tensorflow_import()


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
        except (NotADirectoryError, FileExistsError, IsADirectoryError) as exc:
            # e.g. an --out that names a file where a folder is needed
            what = {NotADirectoryError: "part of this path is a file, not a folder",
                    FileExistsError: "already exists", IsADirectoryError: "is a folder"}
            click.echo(f"error: {exc.filename or exc}: {what[type(exc)]}; choose another path",
                       err=True)
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
    if not verbose:     # their INFO lines ("Assets written to", "Using opset") only with -v
        for name in NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


#: Libraries whose INFO logging is noise on labtf's command line.
NOISY_LOGGERS = ("tensorflow", "tf2onnx", "absl", "h5py", "onnxruntime", "matplotlib", "PIL")


def _train_default(name: str):
    """TrainConfig's default for a field (one source for the library and the CLI)."""
    import dataclasses

    from labtf.config import TrainConfig

    return {f.name: f.default for f in dataclasses.fields(TrainConfig)}[name]


@main.command()
@click.argument("data")
@click.option("--backbone", default=_train_default("backbone"), show_default=True,
              help="Registry name; see 'labtf backbones'.")
@click.option("--weights", default=_train_default("weights"), show_default=True,
              help="imagenet or none.")
@click.option("--epochs", default=_train_default("epochs"), show_default=True,
              help="Head-only epochs (stage 1).")
@click.option("--fine-tune-epochs", default=_train_default("fine_tune_epochs"), show_default=True,
              help="Epochs with the top blocks unfrozen (stage 2; 0 skips).")
@click.option("--fine-tune-blocks", default=_train_default("fine_tune_blocks"), show_default=True)
@click.option("--batch-size", default=_train_default("batch_size"), show_default=True)
@click.option("--image-size", type=int, default=None, help="Square input side [backbone's].")
@click.option("--resize", default=_train_default("resize"), show_default=True,
              help="crop (centre crop), pad (white letterbox) or squash.")
@click.option("--cache-views", default=_train_default("cache_views"), show_default=True,
              help="Train on the frozen trunk's cached activations of this many augmented views "
                   "per image (0: run the whole network every epoch).")
@click.option("--augment-preset", default=_train_default("augment_preset"), show_default=True,
              help="Augmentation strength: light or strong.")
@click.option("--lr-schedule", default=_train_default("lr_schedule"), show_default=True,
              help="Stage-2 learning rate: constant or cosine (one warm-up epoch).")
@click.option("--mixed-precision", default=_train_default("mixed_precision"), show_default=True,
              help="float32, mixed_float16 (GPU) or mixed_bfloat16.")
@click.option("--strategy", default=_train_default("strategy"), show_default=True,
              help="default, mirrored (all GPUs), cpu2 (two logical CPUs, for testing) or "
                   "multiworker (one process per machine; see --cluster).")
@click.option("--cluster", default=None, metavar="HOST:PORT,...",
              help="multiworker: every worker's address, the chief's first [TF_CONFIG].")
@click.option("--worker-index", type=int, default=None,
              help="multiworker: this worker's place in --cluster.")
@click.option("--seed", default=_train_default("seed"), show_default=True)
@click.option("--test-fraction", default=_train_default("test_fraction"), show_default=True)
@click.option("--val-fraction", default=_train_default("val_fraction"), show_default=True)
@click.option("--patience", "early_stopping_patience",
              default=_train_default("early_stopping_patience"), show_default=True,
              help="EarlyStopping patience in epochs (0: off).")
@click.option("--split-file", default=None,
              help="Split manifest to write/reuse [DATA/labtf_split.csv].")
@click.option("--no-augment", is_flag=True, help="Switch training augmentation off.")
@click.option("--resume", is_flag=True, help="Continue a killed run in --out.")
@click.option("--out", default="runs/latest", show_default=True, help="Run folder (must be new).")
@user_errors
def train(data, out, resume, no_augment, cluster, worker_index, **opts):
    """Fine-tune a backbone on DATA (class folders, CSV manifest or tfds:NAME)."""
    from labtf.config import TrainConfig
    from labtf.distribute import set_cluster
    from labtf.training import is_finished
    from labtf.training import train as do_train

    config = TrainConfig(data=data, augment=not no_augment, **opts)
    if (cluster or worker_index is not None) and config.strategy != "multiworker":
        raise LabtfError("--cluster and --worker-index are for --strategy multiworker")
    if (cluster is None) != (worker_index is None):
        raise LabtfError("pass --cluster and --worker-index together")
    if resume and is_finished(Path(out)):
        click.echo(f"run {out} is already finished; nothing changed (train again with a new --out)")
        return
    if cluster:
        set_cluster(cluster, worker_index)
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
    from labtf.evaluation import summary_line

    m = do_eval(run, data, k=top_k)
    click.echo((Path(run) / "confusion.md").read_text())
    click.echo(summary_line(m))


@main.command()
@click.argument("artifact")
@click.argument("images", nargs=-1, required=False)
@click.option("--top-k", default=1, show_default=True)
@click.option("--saliency", default=None, metavar="DIR",
              help="Write a CAM heat-map overlay PNG per image into DIR.")
@click.option("--server", default=None, metavar="URL",
              help="Predict through a TF Serving / 'labtf serve' REST server (every argument is an image).")
@click.option("--model", default=None, help="--server: model name.")
@click.option("--model-version", type=int, default=None, help="--server: version [latest].")
@click.option("--timeout", default=30.0, show_default=True, help="--server: seconds per request.")
@user_errors
def predict(artifact, images, top_k, saliency, server, model, model_version, timeout):
    """Label IMAGES with a run or exported model (SavedModel, .tflite, .onnx, .engine)."""
    from labtf.predict import open_predictor, predict_files

    if server:
        from labtf.serving.client import Client

        if not model:
            raise LabtfError("--server needs --model NAME")
        predictor = Client(server, model, model_version, timeout=timeout)
        images = (artifact, *images)
        results = predictor.predict_files(list(images), top_k, with_cam=bool(saliency))
    else:
        if not images:
            raise LabtfError("pass ARTIFACT and at least one image (or --server URL --model NAME)")
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
            from labtf.explain.render import save_overlay

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
    order = ["none", "float16", "int8"]
    found = {q for f in FORMATS.values() for q in f.quantize}
    return sorted(found, key=lambda q: (order.index(q) if q in order else len(order), q))


class _TableChoice(click.Choice):
    """A click.Choice read from the FORMATS table when parsing, so that a format added to the
    table at run time is accepted (and listed in --help) like a built-in one."""

    def __init__(self, field: str) -> None:
        self.field = field
        super().__init__([])

    @property
    def choices(self) -> tuple:
        return tuple(_export_choices(self.field))

    @choices.setter
    def choices(self, _value) -> None:  # click.Choice.__init__ assigns it
        pass


#: export_cmd parameters that are format options (click name -> exporter option name);
#: the format's OPTIONS schema says which apply.
EXPORT_FORMAT_OPTIONS = {"io_type": "io_type", "calibration_images": "calibration_images",
                         "int8_rounding": "int8_rounding", "name": "name", "version": "version",
                         "batching": "batching", "classifier_twin": "classifier_twin",
                         "author": "author", "license_": "license"}


def _format_options(ctx: click.Context, fmt: str) -> dict:
    """The export options ``fmt`` takes, from the command line (defaults included).

    Raises:
        LabtfError: an option given on the command line that ``fmt`` does not take.
    """
    from click.core import ParameterSource

    from exporters import FORMATS

    takes = FORMATS[fmt].options
    flags = {p.name: p.opts[0] for p in ctx.command.params}
    opts = {}
    for param, option in EXPORT_FORMAT_OPTIONS.items():
        if option in takes:
            opts[option] = ctx.params[param]
        elif ctx.get_parameter_source(param) == ParameterSource.COMMANDLINE:
            valid = ["--quantize", *(flags[p] for p, o in EXPORT_FORMAT_OPTIONS.items()
                                     if o in takes)]
            raise LabtfError(f"{flags[param]} does not apply to --format {fmt}; its options: "
                             f"{', '.join(valid)}")
    return opts


@main.command(name="export")
@click.argument("run")
@click.option("--format", "fmt", required=True, type=_TableChoice("name"),
              help="Artifact format (exporters.FORMATS).")
@click.option("--quantize", default=None, type=_TableChoice("quantize"),
              help="tflite/onnx/saved_model: none (default)|float16|int8; tensorrt: "
                   "float16 (default)|int8; web: int8 (default)|none|float16.")
@click.option("--io-type", default="float32", show_default=True,
              type=click.Choice(["float32", "uint8", "int8"]), help="int8 tflite input/output type.")
@click.option("--calibration-images", default=100, show_default=True,
              help="int8: train-split images used for calibration.")
@click.option("--int8-rounding", default="adaptive", show_default=True,
              type=click.Choice(["adaptive", "nearest"]),
              help="int8 tflite weights: adaptive (each weight rounded up or down to keep "
                   "layer outputs close, plus bias correction) or nearest (the converter's).")
@click.option("--out", default=None, help="Output folder (artifacts + parity.json/.md).")
@click.option("--serving-base", default=None, metavar="DIR",
              help="saved_model: TF Serving repository; writes DIR/NAME/VERSION/ + DIR/models.config.")
@click.option("--batching", is_flag=True, help="saved_model: also write DIR/batching.config.")
@click.option("--name", default=None, help="saved_model: TF Serving model name [run folder name].")
@click.option("--version", "version", default=1, show_default=True,
              help="saved_model: version; tflite: metadata version.")
@click.option("--classifier-twin/--no-classifier-twin", default=True, show_default=True,
              help="tflite: also write model_<tag>_classifier.tflite (probabilities only, "
                   "for MediaPipe's ImageClassifier).")
@click.option("--author", default="labtf", show_default=True, help="tflite: metadata author.")
@click.option("--license", "license_", default="unspecified", show_default=True,
              help="tflite: metadata licence (e.g. Apache-2.0).")
@click.option("--overwrite", is_flag=True, help="Replace an existing artifact.")
@click.option("--no-parity", is_flag=True, help="Skip the parity report against Keras.")
@user_errors
def export_cmd(run, fmt, quantize, out, serving_base, batching, overwrite, no_parity,
               **format_options):
    """Export RUN for deployment and check it against Keras (parity.json/.md in --out)."""
    from exporters import export
    from exporters.parity import markdown_table, parity_report, reference, write_parity
    from labtf.run import Run

    if serving_base and fmt != "saved_model":
        raise LabtfError("--serving-base is for --format saved_model")
    if not (out or serving_base):
        raise LabtfError("pass --out DIR (or --serving-base DIR with --format saved_model)")
    opts = _format_options(click.get_current_context(), fmt)
    artifact = export(run, fmt, serving_base or out, quantize=quantize, overwrite=overwrite, **opts)
    out = out or serving_base
    click.echo(f"exported: {artifact}")
    if fmt == "web":
        click.echo(f"serve it: labtf serve {artifact}   (phones: host it over https to install it)")
    if fmt == "saved_model":
        from labtf.serving.repository import command_lines

        base = Path(artifact).parent.parent
        click.echo(f"TF Serving config: {base / 'models.config'}")
        for line in command_lines(base, batching or (base / "batching.config").is_file()).values():
            click.echo(f"  {line}")
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
    from exporters.benchmark import benchmark_artifacts

    click.echo(benchmark_artifacts(list(artifacts), run_path, runs, batch_size))


@main.command()
@click.argument("artifact")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8501, show_default=True, help="Port (0: any free port).")
@click.option("--workers", default=1, show_default=True, help="Inference threads (and model copies).")
@click.option("--max-body-mb", default=10.0, show_default=True, help="Request size limit (413).")
@click.option("--timeout-s", default=30.0, show_default=True,
              help="Request header/body read and inference timeout (504).")
@click.option("--batch-ms", default=0.0, show_default=True,
              help="Merge concurrent requests arriving within this window (0: off).")
@click.option("--max-batch", default=16, show_default=True, help="Images per merged call.")
@click.option("--max-pending", default=64, show_default=True,
              help="Queued + running requests before 503 (answered at once).")
@click.option("--max-request-mp", default=100.0, show_default=True,
              help="Decoded megapixels one request may carry, read from image headers (413).")
@click.option("--name", default=None,
              help="Model name in the URL [as TF Serving would name the run: its folder name; "
                   "'labtf' if unknown].")
@click.option("--version", "version", type=int, default=None, help="Served version [artifact's or 1].")
@click.option("--access-log", default="-", show_default=True,
              help="JSON-lines access log: '-' stderr, a file, or '' for none.")
@click.option("--grpc-port", type=int, default=None,
              help="Also serve TF Serving's gRPC API on this port (8500 in TF Serving; 0: any "
                   "free port). Needs tensorflow-serving-api.")
@click.option("--version-label", "version_labels", multiple=True, metavar="LABEL",
              help="Version label naming the served version (/v1/models/NAME/labels/LABEL); "
                   "repeatable.")
@user_errors
def serve(artifact, **opts):
    """Serve ARTIFACT over TF Serving's REST (and gRPC) API (+ a try-it page at /); a web
    bundle (labtf export --format web) is served as static files."""
    from labtf.serving.static import is_web_bundle, serve_static

    if is_web_bundle(artifact):
        return serve_static(artifact, opts["host"], opts["port"], ready=lambda url: click.echo(
            f"serving the web app on {url}/  (Ctrl-C to stop)"))
    from labtf.serving.server import serve as do_serve

    def ready(url: str) -> None:
        grpc = url.startswith("grpc://")
        click.echo(f"gRPC on {url[7:]}" if grpc else f"serving on {url}/  (Ctrl-C to stop)")

    opts["access_log_to"] = opts.pop("access_log")
    do_serve(artifact, ready=ready, **opts)


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
    from labtf.evaluation import summary_line

    m = run_demo(out, resume=resume, **overrides)
    click.echo((Path(out) / "confusion.md").read_text())
    click.echo(f"demo: test {summary_line(m)}; run in {out}")


class RegistryChoice(click.Choice):
    """A click.Choice whose names are read from a registry each time they are needed, so
    a method registered at run time is accepted and ``labtf --help`` imports nothing."""

    def __init__(self, names) -> None:
        self._names = names
        super().__init__(())

    @property
    def choices(self) -> tuple:
        return tuple(self._names())

    @choices.setter
    def choices(self, _value) -> None:  # click.Choice.__init__ assigns it
        pass


def _explain_methods() -> list[str]:
    from labtf.explain.registry import explain_choices

    return explain_choices()


def _default_eval_methods() -> str:
    from labtf.explain.registry import default_eval_methods

    return ",".join(default_eval_methods())


@main.command()
@click.argument("run")
@click.argument("images", nargs=-1, required=True)
@click.option("--method", default="gradcam", show_default=True,
              type=RegistryChoice(_explain_methods), help="Saliency method.")
@click.option("--class", "class_name", default=None, help="Explain this class [top prediction].")
@click.option("--layer", default=None, help="CAM target layer [the run's cam_layer].")
@click.option("--panel", is_flag=True,
              help="Also write image | Grad-CAM | Guided Backprop | Guided Grad-CAM panels.")
@click.option("--out", default="explanations", show_default=True,
              help="Output folder (existing files are never overwritten).")
@click.option("--batch-size", default=8, show_default=True, help="Images per batch.")
@user_errors
def explain(run, images, method, class_name, layer, panel, out, batch_size):
    """Saliency maps (.npy), overlays (.png) and contact sheets for IMAGES."""
    from labtf.explain.batch import explain_files

    results, sheets = explain_files(run, list(images), method=method, class_name=class_name,
                                    layer=layer, out=out, panel=panel, batch_size=batch_size)
    failed = [r for r in results if r.error]
    for r in results:
        if r.error:
            click.echo(f"error: {r.error}", err=True)
        else:
            click.echo(f"{r.path}\t{r.label} {r.confidence:.2f}\t" + " ".join(map(str, r.outputs)))
    for sheet in sheets:
        click.echo(f"sheet: {sheet}")
    if failed:
        click.echo(f"{len(failed)} of {len(results)} image(s) could not be read", err=True)
        sys.exit(1)


@main.command("explain-eval")
@click.argument("run")
@click.argument("data", required=False)
@click.option("--masks", default=None, help="Folder of object masks named like the images.")
@click.option("--methods", default=None,
              help=f"Comma-separated methods [{_default_eval_methods()}].")
@click.option("--steps", default=16, show_default=True, help="Deletion/insertion steps.")
@click.option("--limit", type=int, default=None,
              help="Evaluate N images drawn evenly across the classes (seeded by --seed).")
@click.option("--sanity-images", default=6, show_default=True,
              help="Images for the parameter-randomization test (0: skip).")
@click.option("--batch-size", default=8, show_default=True,
              help="Images per batch (memory grows with it, not with the number of images).")
@click.option("--seed", default=0, show_default=True,
              help="Seed of the --limit draw, the random baseline and the randomization.")
@click.option("--out", default=None, help="Folder for explain_eval.md/.json [RUN].")
@click.option("--label-randomization", "twin", default=None, metavar="DIR",
              help="Also compare with a twin run trained on shuffled labels, in DIR "
                   "(trained there first with the run's settings unless finished; its "
                   "manifest goes beside it, DIR_shuffled_labels.csv).")
@user_errors
def explain_eval(run, data, masks, methods, steps, limit, sanity_images, batch_size, seed, out,
                 twin):
    """Faithfulness of the maps: deletion/insertion AUC, randomization, pointing game."""
    from labtf.explain.faithfulness import ExplainEvalOptions, table_markdown
    from labtf.explain.faithfulness import explain_eval as do_eval

    names = [m.strip() for m in methods.split(",") if m.strip()] if methods else None
    options = ExplainEvalOptions(data=data, methods=names, mask_dir=masks, steps=steps,
                                 limit=limit, sanity_images=sanity_images, batch_size=batch_size,
                                 seed=seed, out=out, label_randomization=twin)
    result = do_eval(run, options=options)
    click.echo(table_markdown(result))
    for path in result["written"]:
        click.echo(f"written: {path}")


@main.command()
@click.argument("run")
@click.option("--out", default=None, help="HTML file [RUN/report.html].")
@click.option("--samples", default=8, show_default=True, help="Correct and wrong examples each.")
@user_errors
def report(run, out, samples):
    """One self-contained HTML page: data, curves, confusion table, Grad-CAM examples."""
    from labtf.explain.report import build_report

    click.echo(f"report: {build_report(run, out, samples)}")


@main.command()
@click.argument("out")
@click.option("--keywords", default=None, metavar="FILE",
              help="Class -> queries JSON/TXT [--provider urls alone: the URL list's classes; "
                   "else datasets/lab_apparatus_keywords.json: the poster's 15].")
@click.option("--provider", "providers", multiple=True, default=("openverse",), show_default=True,
              help="openverse, wikimedia or urls (repeatable).")
@click.option("--base-url", "base_urls", multiple=True, metavar="NAME=URL",
              help="Provider API base URL, e.g. openverse=http://127.0.0.1:8000 (mirrors, tests).")
@click.option("--urls", "urls_file", default=None, help="URL list (CSV label,url) for --provider urls.")
@click.option("--class", "classes", multiple=True, help="Only these classes (repeatable).")
@click.option("--per-class", default=600, show_default=True, help="Candidates per class and provider.")
@click.option("--workers", default=8, show_default=True, help="Concurrent downloads.")
@click.option("--timeout", default=10.0, show_default=True,
              help="Seconds per socket operation; a whole download (all retries) gets 3x this.")
@click.option("--retries", default=3, show_default=True, help="Retries on 5xx/timeouts/drops.")
@click.option("--rate", "rate_per_host", default=4.0, show_default=True,
              help="Requests per second per host (0: unlimited).")
@click.option("--max-mb", default=20.0, show_default=True, help="Largest image accepted (MB).")
@click.option("--refresh-search", is_flag=True,
              help="Search everything again (failed and empty searches always are).")
@click.option("--retry-failed", is_flag=True, help="Try URLs again that failed before.")
@click.option("--contact", default=None, metavar="TEXT",
              help="Your e-mail and/or project URL for the User-Agent; required by wikimedia "
                   "[env LABTF_CONTACT].")
@click.option("--user-agent", default=None, metavar="TEXT",
              help="The whole User-Agent instead (with contact details) [env LABTF_USER_AGENT].")
@click.option("--openverse-client-id", default=None, metavar="ID",
              help="Openverse OAuth2 client id: pages of up to 500 [env OPENVERSE_CLIENT_ID].")
@click.option("--openverse-client-secret", default=None, metavar="SECRET",
              help="Its secret; prefer env OPENVERSE_CLIENT_SECRET (command lines are visible).")
@click.option("--licence-allows", "--license-allows", "licence_allows", multiple=True,
              metavar="LIST", help="Keep only licences allowing all of: commercial, modification, "
                                   "no-attribution, no-share-alike (comma list, repeatable).")
@click.option("--licence", "--license", "licences", multiple=True, metavar="ID",
              help="Keep only these licences, e.g. CC0,CC-BY-4.0,CC-BY-SA (no version: all).")
@user_errors
def collect(out, keywords, providers, base_urls, urls_file, classes, per_class, workers, timeout,
            retries, rate_per_host, max_mb, refresh_search, retry_failed, contact, user_agent,
            openverse_client_id, openverse_client_secret, licence_allows, licences):
    """Search and download images into OUT/images/<class>/ with a manifest (resumable)."""
    from labtf.collect import CollectOptions
    from labtf.collect import collect as do_collect

    bases = {}
    for item in base_urls:
        if "=" not in item:
            raise LabtfError(f"--base-url '{item}' must look like NAME=URL")
        k, v = item.split("=", 1)
        bases[k.strip()] = v.strip()
    options = CollectOptions(providers=tuple(providers), per_class=per_class, base_urls=bases,
                             urls_file=urls_file, workers=workers, timeout=timeout,
                             retries=retries, rate_per_host=rate_per_host,
                             max_bytes=int(max_mb * (1 << 20)), refresh_search=refresh_search,
                             retry_failed=retry_failed, contact=contact, user_agent=user_agent,
                             openverse_client_id=openverse_client_id,
                             openverse_client_secret=openverse_client_secret,
                             licence_allows=licence_allows, licences=licences,
                             classes=list(classes) or None)
    c = do_collect(keywords, out, options=options)
    lic = f", {c['licence_filtered']} refused by licence" if "licence_filtered" in c else ""
    click.echo(f"collect: {c['candidates']} candidate(s){lic} -> {c['ok']} kept, {c['duplicate']} "
               f"duplicate, {c['failed']} failed; manifest {Path(out) / 'manifest.jsonl'}")


@main.command()
@click.argument("work")
@click.option("--apply", "apply_lists", multiple=True, metavar="LIST",
              help="Move the files of an exported review list (JSON/TXT) to WORK/rejected/.")
@click.option("--min-side", default=64, show_default=True, help="Smallest image side kept (px).")
@click.option("--max-aspect", default=4.0, show_default=True, help="Largest long/short side ratio.")
@click.option("--drop-duplicates", is_flag=True,
              help="Also move all but the largest of each same-class near-duplicate group.")
@user_errors
def curate(work, apply_lists, min_side, max_aspect, drop_duplicates):
    """Filter, group near-duplicates, write review pages; or --apply a review list."""
    from labtf.curate import apply_rejections, curate as do_curate

    if apply_lists:
        c = apply_rejections(work, list(apply_lists))
        click.echo(f"review: {c['rejected']} file(s) moved to rejected/; {c['after']} image(s) left")
        return
    c = do_curate(work, min_side=min_side, max_aspect=max_aspect, drop_duplicates=drop_duplicates)
    click.echo(f"curate: {c['after']} image(s), {c['groups']} near-duplicate group(s) "
               f"({c['cross_class_groups']} across classes); review: "
               f"{Path(work) / 'curation' / 'review' / 'index.html'}")


@main.command()
@click.argument("work")
@click.option("--test-fraction", default=0.18, show_default=True)
@click.option("--val-fraction", default=0.1, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--out", default=None, help="Manifest path [WORK/split.csv].")
@user_errors
def split(work, test_fraction, val_fraction, seed, out):
    """Stratified split keeping near-duplicate groups on one side; writes path,label,split."""
    from labtf.curate import grouped_split

    path = grouped_split(work, test_fraction=test_fraction, val_fraction=val_fraction, seed=seed,
                         out=out)
    click.echo(f"split: {path}  (train with: labtf train {path})")


if __name__ == "__main__":
    main()
