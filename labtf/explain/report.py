"""``labtf report RUN``: one self-contained HTML page (images embedded as base64 PNG).

Sections: data summary (images per class and split), training curves, the
poster's confusion table with per-class accuracy, correct and wrong test
predictions with Grad-CAM overlays, and the faithfulness table when
``explain_eval.json`` is in the run. No network, scripts or external files.
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

CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}td,th{border:1px solid #bbb;
padding:3px 7px;text-align:right}th{background:#eee}td:first-child{text-align:left}
figure{display:inline-block;margin:4px;text-align:center;font-size:12px;vertical-align:top}
img{max-width:100%}.bad{color:#b00;font-weight:bold}"""


def _img_tag(data: bytes, alt: str, width: int | None = None) -> str:
    w = f' width="{width}"' if width else ""
    b64 = base64.b64encode(data).decode("ascii")
    return f'<img alt="{html.escape(alt)}"{w} src="data:image/png;base64,{b64}">'


def _table(rows: list[list[str]], header: bool = True) -> str:
    out = ["<table>"]
    for i, r in enumerate(rows):
        tag = "th" if header and i == 0 else "td"
        out.append("<tr>" + "".join(f"<{tag}>{html.escape(str(c))}</{tag}>" for c in r) + "</tr>")
    return "\n".join(out + ["</table>"])


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


def _samples(run, explainer, per_kind: int) -> str:
    from labtf.explain.render import labelled_overlay, png_bytes
    from labtf.images import BadImage

    path = run.file("predictions.csv")
    if not path.is_file():
        return "<p>No predictions yet: run <code>labtf evaluate RUN</code>.</p>"
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for kind, keep in (("Correct", lambda r: r["label"] == r["predicted"]),
                       ("Wrong", lambda r: r["label"] != r["predicted"])):
        chosen = [r for r in rows if keep(r)][:per_kind]
        figs = []
        for r in chosen:
            try:
                img = explainer.load(r["path"])
            except BadImage as exc:
                figs.append(f"<figure>{html.escape(str(exc))}</figure>")
                continue
            e = explainer.explain(img, "gradcam")
            tile = labelled_overlay(img, e.map, e.class_name, e.confidence, "Grad-CAM")
            cap = f"{Path(r['path']).name}: true {r['label']}, predicted {r['predicted']}"
            figs.append(f"<figure>{_img_tag(png_bytes(tile), cap, 200)}<figcaption>"
                        f"{html.escape(cap)}</figcaption></figure>")
        total = sum(keep(r) for r in rows)
        out.append(f"<h3>{kind} ({total} of {len(rows)}; {len(chosen)} shown)</h3>"
                   + ("".join(figs) or "<p>none</p>"))
    return "\n".join(out)


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
    body = [f"<h1>{html.escape(title)}</h1>",
            f"<p>{meta.get('image_size')} px, resize {meta.get('resize', 'crop')}, "
            f"{len(run.classes)} classes, CAM layer {html.escape(str(meta.get('cam_layer')))}."
            "</p>", "<h2>Data</h2>", _data_summary(run), "<h2>Training curves</h2>"]
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
    if run.file("explain_eval.md").is_file():
        body += ["<h2>Faithfulness of the explanations</h2>",
                 _markdown_to_html(run.file("explain_eval.md").read_text())]
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")
    write_text(target, page)
    log.info("report written: %s (%d kB)", target, len(page) // 1024)
    return target
