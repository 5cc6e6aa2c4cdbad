"""``labtf report RUN``: one self-contained HTML page (images embedded as base64 PNG).

Sections: data summary (images per class and split), training curves, the
poster's confusion table with per-class accuracy, correct and wrong test
predictions with Grad-CAM overlays (drawn in turn from each class), and the
faithfulness table once ``labtf explain-eval`` has written ``explain_eval.md``
(until then the section says how to make it). No network, scripts or external files.
"""
from __future__ import annotations

import base64
import csv
import html
import logging
import os
from collections import Counter
from pathlib import Path

from labtf.errors import LabtfError

log = logging.getLogger(__name__)

CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;
color:#222}table{border-collapse:collapse;margin:.6em 0;font-size:13px}td,th{border:1px solid #bbb;
padding:3px 7px;text-align:right}th{background:#eee}td:first-child{text-align:left}
.scroll{overflow-x:auto;max-width:100%}.meta td{text-align:left}
.gallery{display:grid;grid-template-columns:repeat(4,minmax(0,1fr));gap:10px}
figure{margin:0;text-align:center;font-size:12px}.gallery img{width:100%}figcaption{margin-top:2px}
img{max-width:100%}.bad{color:#b00;font-weight:bold}.note{color:#555}"""


def _img_tag(data: bytes, alt: str, width: int | None = None) -> str:
    w = f' width="{width}"' if width else ""
    b64 = base64.b64encode(data).decode("ascii")
    return f'<img alt="{html.escape(alt)}"{w} src="data:image/png;base64,{b64}">'


def _table(rows: list[list[str]], header: bool = True, cls: str = "") -> str:
    """A table in a horizontally scrolling box (wide tables never widen the page)."""
    out = [f'<div class="scroll"><table{f" class={cls!r}" if cls else ""}>']
    for i, r in enumerate(rows):
        tag = "th" if header and i == 0 else "td"
        out.append("<tr>" + "".join(f"<{tag}>{html.escape(str(c))}</{tag}>" for c in r) + "</tr>")
    return "\n".join(out + ["</table></div>"])


def _markdown_to_html(md: str) -> str:
    """Paragraphs and pipe tables of our own Markdown (bold **x** kept)."""
    parts, table = [], []

    def flush() -> None:
        if table:
            rows = [[c.strip() for c in line.strip("|").split("|")] for line in table
                    if not set(line.replace("|", "")) <= set("-: ")]
            parts.append(_table(rows).replace("<td>**no**</td>", '<td class="bad">no</td>'))
            table.clear()

    for line in md.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.strip():
            parts.append(f"<p>{html.escape(line)}</p>")
    flush()
    return "\n".join(parts)


def _data_summary(run) -> str:
    from labtf.manifest import read_manifest

    path = run.file("split.csv")
    if not path.is_file():
        return "<p>split.csv is missing.</p>"
    samples = read_manifest(path, validate=False).samples
    counts = Counter((s.label, s.split) for s in samples)
    splits = [s for s in ("train", "val", "test") if any(k[1] == s for k in counts)]
    rows = [["class", *splits, "total"]]
    for c in run.classes:
        n = [counts.get((c, s), 0) for s in splits]
        rows.append([c, *map(str, n), str(sum(n))])
    tot = [sum(counts.get((c, s), 0) for c in run.classes) for s in splits]
    rows.append(["TOTAL", *map(str, tot), str(sum(tot))])
    return _table(rows)


def across_classes(rows: list[dict], n: int) -> list[dict]:
    """Up to ``n`` rows taken in turn from each true class (file order within a class)."""
    by_class: dict[str, list[dict]] = {}
    for r in rows:
        by_class.setdefault(r["label"], []).append(r)
    queues = [list(v) for _, v in sorted(by_class.items())]
    out: list[dict] = []
    while len(out) < n and any(queues):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop(0))
    return out


def _samples(run, explainer, per_kind: int) -> str:
    from labtf.explain.render import overlay, png_bytes
    from labtf.images import BadImage

    path = run.file("predictions.csv")
    if not path.is_file():
        return "<p>No predictions yet: run <code>labtf evaluate RUN</code>.</p>"
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for kind, keep in (("Correct", lambda r: r["label"] == r["predicted"]),
                       ("Wrong", lambda r: r["label"] != r["predicted"])):
        matching = [r for r in rows if keep(r)]
        chosen = across_classes(matching, per_kind)
        figs = []
        for r in chosen:
            name = html.escape(Path(r["path"]).name)
            try:
                img = explainer.load(r["path"])
            except BadImage as exc:
                figs.append(f"<figure><figcaption>{html.escape(str(exc))}</figcaption></figure>")
                continue
            e = explainer.explain(img, "gradcam")
            cap = (f"{name}<br>true <b>{html.escape(r['label'])}</b>, predicted "
                   f"<b>{html.escape(r['predicted'])}</b> (p={float(r['confidence']):.2f})")
            figs.append(f"<figure>{_img_tag(png_bytes(overlay(img, e.map)), Path(r['path']).name)}"
                        f"<figcaption>{cap}</figcaption></figure>")
        classes = len({r["label"] for r in chosen})
        out.append(f"<h3>{kind} ({len(matching)} of {len(rows)}; {len(chosen)} shown, from "
                   f"{classes} class(es))</h3>"
                   + (f'<div class="gallery">{"".join(figs)}</div>' if figs else "<p>none</p>"))
    return "\n".join(out)


def _run_facts(run, meta: dict) -> str:
    """Date, data, training time and model of the run as a small two-column table."""
    import time

    model = run.file(run.MODEL)
    trained = time.strftime("%Y-%m-%d %H:%M", time.localtime(model.stat().st_mtime))
    try:        # the raw file: a config written by another labtf version still names its data
        data = run.read_json("config.json").get("data", "?")
    except (LabtfError, ValueError, AttributeError):
        data = "?"
    secs = meta.get("train_seconds")
    took = f"{secs / 60:.1f} min ({secs:.0f} s)" if isinstance(secs, (int, float)) else "?"
    kept = meta.get("kept_epoch") or {}
    rows = [["trained", trained], ["report written", time.strftime("%Y-%m-%d %H:%M")],
            ["data", str(data)], ["training time", took],
            ["backbone", f"{meta.get('backbone', '?')} ({meta.get('weights', '?')} weights), "
                         f"{meta.get('image_size')} px, resize {meta.get('resize', 'crop')}"],
            ["images", f"{meta.get('n_train', '?')} train, {meta.get('n_val', '?')} val, "
                       f"{meta.get('n_test', '?')} test, {len(run.classes)} classes"],
            ["kept weights", f"epoch {kept.get('epoch', '?')} (stage {kept.get('stage', '?')}), "
                             f"lowest {meta.get('monitor', '?')}"],
            ["CAM layer", str(meta.get("cam_layer"))]]
    return _table(rows, header=False, cls="meta")


def build_report(run_path: str | os.PathLike, out: str | os.PathLike | None = None,
                 samples: int = 8) -> Path:
    """Write the HTML report of a run.

    Args:
        run_path: run folder.
        out: HTML file (default ``RUN/report.html``; an existing file elsewhere is
            never overwritten).
        samples: correct and wrong examples shown (each).

    Returns:
        Path of the written page.

    Raises:
        LabtfError: missing run, or ``out`` exists outside the run folder.
    """
    from labtf.explain.core import Explainer
    from labtf.run import Run, write_text

    run = Run.open(run_path)
    target = Path(out) if out else run.file("report.html")
    if out and target.exists():
        raise LabtfError(f"{target} already exists; choose another --out or remove it")
    meta = run.meta
    title = f"labtf report: {run.path.name} ({meta.get('backbone', '?')})"
    body = [f"<h1>{html.escape(title)}</h1>", _run_facts(run, meta),
            "<h2>Data</h2>", _data_summary(run), "<h2>Training curves</h2>"]
    hist = run.file("history.png")
    body.append(_img_tag(hist.read_bytes(), "training curves") if hist.is_file()
                else "<p>history.png is missing.</p>")
    body.append("<h2>Test results</h2>")
    if run.file("metrics.json").is_file():
        m = run.read_json("metrics.json")
        body.append(f"<p>Accuracy <b>{100 * m['accuracy']:.2f}%</b> on {m['n_test']} images; "
                    f"top-{m['top_k']} {100 * m['top_k_accuracy']:.2f}%; "
                    f"macro F1 {m.get('macro_f1', 0):.3f}.</p>")
        if run.file("confusion.csv").is_file():
            with open(run.file("confusion.csv"), newline="") as fh:
                body.append(_table(list(csv.reader(fh))))
        rows = [["class", "n", "accuracy %", "precision", "recall", "F1"]]
        for c, v in m["per_class"].items():
            acc = "-" if v["accuracy"] is None else f"{100 * v['accuracy']:.2f}"
            rows.append([c, str(v["n"]), acc, f"{v['precision']:.3f}", f"{v['recall']:.3f}",
                         f"{v['f1']:.3f}"])
        body.append(_table(rows))
        if run.file("confusion.png").is_file():
            body.append(_img_tag(run.file("confusion.png").read_bytes(), "confusion matrix", 520))
    else:
        body.append("<p>Not evaluated yet: run <code>labtf evaluate RUN</code>.</p>")
    body.append("<h2>Test predictions with Grad-CAM</h2>")
    body.append(_samples(run, Explainer.from_run(run), samples))
    body.append("<h2>Faithfulness of the explanations</h2>")
    if run.file("explain_eval.md").is_file():
        body.append(_markdown_to_html(run.file("explain_eval.md").read_text()))
    else:
        body.append('<p class="note">Not measured yet: run <code>labtf explain-eval '
                    f'{html.escape(str(run.path))}</code> (deletion/insertion AUC, randomization '
                    "tests, pointing game), then <code>labtf report</code> again.</p>")
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")
    write_text(target, page)
    log.debug("report written: %s (%d kB)", target, len(page) // 1024)
    return target
