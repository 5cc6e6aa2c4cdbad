"""Self-contained HTML review pages: one contact sheet per class.

Thumbnails are embedded (base64 JPEG), so a page opens from anywhere. A person
clicks images to mark them rejected (click again to undo) and presses
"Export" to download ``rejected_<class>.json`` (``{"class", "rejected": [paths]}``),
which ``labtf curate WORK --apply FILE`` applies. Near-duplicate groups are
badged; groups spanning classes are flagged in red; likely outliers
(:mod:`labtf.curate.outliers`) get an orange badge and come first.
"""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from PIL import Image

from labtf.fileio import write_text
from labtf.images import to_rgb

THUMB_PX = 160

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>labtf review: {title}</title>
<style>
body{{font-family:sans-serif;margin:1em;background:#fafafa}}
#bar{{position:sticky;top:0;background:#fff;padding:.5em;border-bottom:1px solid #ccc;z-index:2}}
.grid{{display:flex;flex-wrap:wrap;gap:6px;margin-top:.8em}}
.tile{{width:{px}px;border:3px solid #ddd;background:#fff;cursor:pointer;position:relative;font-size:11px}}
.tile img{{width:{px}px;height:{px}px;object-fit:contain;display:block}}
.tile.rejected{{border-color:#d00;opacity:.45}}
.tile.rejected::after{{content:"\\2715";position:absolute;top:2px;right:6px;color:#d00;font-size:26px}}
.tile .cap{{overflow:hidden;white-space:nowrap;text-overflow:ellipsis;padding:2px}}
.badge{{background:#36c;color:#fff;border-radius:3px;padding:0 3px}}
.badge.cross{{background:#d00}}
.badge.odd{{background:#e80}}
</style></head><body>
<div id="bar"><b>{title}</b> &middot; {n} image(s) &middot; click to reject, click again to undo &middot;
<span id="count">0</span> rejected
<button id="export">Export rejected list</button>
<button id="clear">Clear</button> <a href="index.html">all classes</a></div>
<div class="grid">
{tiles}
</div>
<script>
const CLASS = {cls_json};
const rejected = new Set();
function update() {{ document.getElementById("count").textContent = rejected.size; }}
document.querySelectorAll(".tile").forEach(t => t.addEventListener("click", () => {{
  const p = t.dataset.path;
  if (rejected.has(p)) {{ rejected.delete(p); t.classList.remove("rejected"); }}
  else {{ rejected.add(p); t.classList.add("rejected"); }}
  update();
}}));
function labtfRejected() {{ return {{"class": CLASS, "rejected": Array.from(rejected).sort()}}; }}
window.labtfRejected = labtfRejected;
document.getElementById("export").addEventListener("click", () => {{
  const blob = new Blob([JSON.stringify(labtfRejected(), null, 1)], {{type: "application/json"}});
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = "rejected_" + CLASS + ".json";
  document.body.appendChild(a); a.click(); a.remove();
}});
document.getElementById("clear").addEventListener("click", () => {{
  rejected.clear(); document.querySelectorAll(".tile").forEach(t => t.classList.remove("rejected")); update();
}});
</script></body></html>
"""


def thumbnail_data_uri(path: Path, px: int = THUMB_PX) -> str:
    """A small JPEG of the image as a ``data:`` URI (grey box when unreadable)."""
    try:
        with Image.open(path) as img:
            img.seek(0)
            img.draft("RGB", (px * 2, px * 2))
            img.load()
            rgb = to_rgb(img).copy()
        rgb.thumbnail((px, px))
    except Exception:  # unreadable files are shown, not fatal
        rgb = Image.new("RGB", (px, px), (200, 200, 200))
    buf = io.BytesIO()
    rgb.save(buf, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def outlier_badge(flag: dict) -> str:
    """Short badge text of a likely outlier, with its reason in numbers."""
    if flag["reason"] == "closer to another class":
        return (f"looks like {flag['closest_class']} ({flag['closest_similarity']:.2f} vs "
                f"{flag['own_similarity']:.2f} own)")
    return f"far from its class (z {flag['z']:.1f})"


def outlier_reason(flag: dict, label: str) -> str:
    """The badge's tooltip: why the embedding stage flagged the image."""
    own, other = flag["own_similarity"], flag["closest_similarity"]
    if flag["reason"] == "closer to another class":
        return (f"its nearest '{flag['closest_class']}' images are more similar ({other:.2f}) "
                f"than its nearest '{label}' images ({own:.2f}): mislabelled?")
    return (f"much less similar to the other '{label}' images ({own:.2f}) than they are to each "
            f"other (robust z {flag['z']:.1f}): off-topic or unusual?")


def write_review_pages(work: Path, items: list[tuple[str, str]], groups: list[dict],
                       flags: list[dict] | None = None) -> Path:
    """Write ``curation/review/<class>.html`` and ``index.html``.

    Args:
        work: workspace.
        items: (path relative to the workspace, label) of images to review.
        groups: near-duplicate groups as in ``groups.json``.
        flags: likely outliers as in ``outliers.json`` (shown first, badged).

    Returns:
        Path of ``index.html``.
    """
    out = work / "curation" / "review"
    out.mkdir(parents=True, exist_ok=True)
    badge: dict[str, tuple[int, bool, list[str]]] = {}
    for g in groups:
        for p in g["paths"]:
            badge[p] = (g["group"], g["cross_class"], g["labels"])
    odd = {f["path"]: f for f in flags or []}
    by_class: dict[str, list[str]] = {}
    for rel, label in items:
        by_class.setdefault(label, []).append(rel)
    rows = []
    for label, paths in sorted(by_class.items()):
        tiles = []
        paths = sorted(paths, key=lambda p: p not in odd)   # flagged first, otherwise in order
        for rel in paths:
            cap = html.escape(Path(rel).name)
            b = ""
            if rel in odd:
                f = odd[rel]
                b = f'<span class="badge odd" title="{html.escape(outlier_reason(f, label))}">' \
                    f'{html.escape(outlier_badge(f))}</span> '
            if rel in badge:
                g, cross, labels = badge[rel]
                other = [x for x in labels if x != label]
                extra = f" also in {', '.join(other)}" if cross else ""
                b += f'<span class="badge{" cross" if cross else ""}">dup {g}{html.escape(extra)}</span> '
            tiles.append(f'<div class="tile" data-path="{html.escape(rel)}" title="{html.escape(rel)}">'
                         f'<img loading="lazy" src="{thumbnail_data_uri(work / rel)}" alt="">'
                         f'<div class="cap">{b}{cap}</div></div>')
        page = _PAGE.format(title=html.escape(label), n=len(paths), tiles="\n".join(tiles),
                            cls_json=json.dumps(label), px=THUMB_PX)
        write_text(out / f"{label}.html", page)
        n_dup = sum(1 for p in paths if p in badge)
        n_odd = sum(1 for p in paths if p in odd)
        rows.append(f'<tr><td><a href="{html.escape(label)}.html">{html.escape(label)}</a></td>'
                    f"<td>{len(paths)}</td><td>{n_dup}</td><td>{n_odd}</td></tr>")
    cross = [g for g in groups if g["cross_class"]]
    if cross:
        spans = (f"<p>{len(groups)} near-duplicate group(s); {len(cross)} span classes (the "
                 "same picture filed under two labels: keep it in one):</p><ul>"
                 + "".join(f"<li>group {g['group']} ({html.escape(', '.join(g['labels']))}): "
                           f"{html.escape(', '.join(g['paths']))}</li>" for g in cross) + "</ul>")
    else:
        spans = (f"<p>{len(groups)} near-duplicate group(s), none spanning classes.</p>"
                 if groups else "<p>No near-duplicate groups.</p>")
    index = ("<!doctype html><html><head><meta charset='utf-8'><title>labtf review</title></head>"
             "<body style='font-family:sans-serif'><h1>Review</h1><p>Open each class, click the "
             "images that do not belong, press <i>Export rejected list</i>, then run "
             "<code>labtf curate WORK --apply rejected_CLASS.json</code>.</p>"
             "<table border=1 cellpadding=4><tr><th>class</th><th>images</th>"
             f"<th>in near-duplicate groups</th><th>flagged as likely outliers</th></tr>"
             f"{''.join(rows)}</table>"
             f"{spans}</body></html>\n")
    write_text(out / "index.html", index)
    return out / "index.html"
