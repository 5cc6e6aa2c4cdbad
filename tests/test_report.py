"""labtf report: a self-contained HTML page that a real browser renders without errors."""
from __future__ import annotations

import re
import shutil
import subprocess
import pytest
from click.testing import CliRunner

import cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

#: Appended to a copy of the page: writes the image check into the DOM for --dump-dom.
PROBE = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (i) { return !i.complete || i.naturalWidth === 0; });
  document.body.setAttribute('data-probe', 'images=' + imgs.length + ';broken=' + broken.length);
});
</script>"""


@pytest.fixture(scope="module")
def report(trained_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report.html"
    res = CliRunner().invoke(cli.main, ["report", str(trained_run.path), "--out", str(out),
                                        "--samples", "3"])
    assert res.exit_code == 0, res.output
    return out


def test_report_is_self_contained_and_complete(trained_run, report):
    page = report.read_text()
    srcs = re.findall(r'src="([^"]*)"', page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "http://" not in page and "https://" not in page and "<script" not in page
    for c in trained_run.classes:
        assert c in page
    assert "TOTAL" in page and "Class Acc. (%)" in page and "Training curves" in page
    assert "Grad-CAM" in page and "Correct (" in page and "Wrong (" in page
    assert len(srcs) >= 2 + 3  # curves + confusion + Grad-CAM examples
    again = CliRunner().invoke(cli.main, ["report", str(trained_run.path), "--out", str(report)])
    assert again.exit_code == 2 and "already exists" in again.output


def test_report_shows_faithfulness_table_when_present(trained_run, tmp_path):
    from labtf.explain.report import build_report

    md = trained_run.file("explain_eval.md")
    created = not md.exists()
    if created:
        md.write_text("Faithfulness on 1 image(s).\n\n| method | passes |\n|---|---|\n"
                      "| guided | **no** |\n")
    try:
        page = build_report(trained_run.path, tmp_path / "r.html", samples=1).read_text()
    finally:
        if created:
            md.unlink()
    assert "Faithfulness of the explanations" in page
    assert '<td class="bad">no</td>' in page


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_report_renders_in_headless_chromium(report, tmp_path):
    probe = tmp_path / "probe.html"
    probe.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-background-networking", "--disable-component-update", "--no-first-run",
           f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
           "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    m = re.search(r'data-probe="images=(\d+);broken=(\d+)"', res.stdout)
    assert m, res.stdout[:500]
    assert int(m.group(1)) >= 5 and int(m.group(2)) == 0
    console = [line for line in res.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    shot = tmp_path / "shot.png"
    subprocess.run(cmd[:-2] + [f"--screenshot={shot}", "--window-size=1200,2000", report.as_uri()],
                   capture_output=True, text=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000


def test_samples_are_drawn_across_classes():
    from labtf.explain.report import across_classes

    rows = [{"label": c, "i": i} for c, n in (("a", 9), ("b", 2), ("c", 5)) for i in range(n)]
    got = across_classes(rows, 8)
    assert [r["label"] for r in got] == ["a", "b", "c", "a", "b", "c", "a", "c"]
    assert [r["i"] for r in got if r["label"] == "a"] == [0, 1, 2]
    assert across_classes(rows[:3], 8) == rows[:3]


def test_report_states_run_facts_and_missing_faithfulness(trained_run, report):
    page = report.read_text()
    meta = trained_run.meta
    assert "report written" in page and "training time" in page
    assert f"({meta['train_seconds']:.0f} s)" in page
    assert trained_run.config.data in page
    if not trained_run.file("explain_eval.md").exists():
        assert "Not measured yet: run <code>labtf explain-eval" in page
    # one caption per sample (the caption is not also drawn into the picture)
    assert page.count("<figcaption>") == page.count("<figure>")
    assert '<div class="gallery">' in page and '<div class="scroll"><table>' in page


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_report_fits_1280_px(report, tmp_path):
    """At 1280 px the page never scrolls sideways (wide tables scroll in their box) and the
    gallery tiles are all the same width."""
    import json as _json

    from cdp import Browser

    with Browser(CHROMIUM, tmp_path / "profile") as browser:
        page = browser.open(report.as_uri())
        page.send("Emulation.setDeviceMetricsOverride",
                  {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False})
        assert page.wait_for("document.readyState === 'complete'", 20)
        widths = _json.loads(page.eval(
            "JSON.stringify({page: document.documentElement.scrollWidth, view: innerWidth, "
            "tiles: Array.from(document.querySelectorAll('.gallery figure'))"
            ".map(f => Math.round(f.getBoundingClientRect().width))})"))
    assert widths["page"] <= widths["view"] == 1280, widths
    assert widths["tiles"] and len(set(widths["tiles"])) == 1, widths
