"""The web export: bundle contents, runtime discovery, Pillow-exact resize in JS, static
hosting, and the page itself in headless Chromium against Python on the same .tflite."""
from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from labtf.errors import LabtfError

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "exporters" / "web_assets"
NODE = shutil.which("node")


def _runtime_or_skip():
    from exporters.web import NPM_INSTALL, find_runtime

    if find_runtime() is None:
        pytest.skip(f"LiteRT.js runtime not installed (npm); run: {NPM_INSTALL}")


def test_missing_runtime_names_the_npm_command(trained_run, tmp_path, monkeypatch):
    from exporters import export

    monkeypatch.setenv("LABTF_WEB_RUNTIME", str(tmp_path / "empty"))
    monkeypatch.setenv("LABTF_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LabtfError, match=r"npm install --prefix ~/.cache/labtf/web @litertjs/core@") as e:
        export(trained_run.path, "web", tmp_path / "app")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "app").exists()


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_js_resize_matches_pillow(tmp_path):
    """preprocess.js (run by node) against labtf.images.to_square, every mode, up and down."""
    from labtf.images import to_square

    rng = np.random.default_rng(0)
    cases = []
    for i, (w, h) in enumerate([(48, 48), (640, 480), (1000, 333), (225, 224), (31, 17),
                                (1234, 987), (100, 50)]):
        img = (rng.random((h, w, 3)) * 255).astype(np.uint8)
        img.tofile(tmp_path / f"img{i}.raw")
        for size in (64, 224):
            for mode in ("crop", "pad", "squash"):
                to_square(img, size, mode).tofile(tmp_path / f"ref{i}_{size}_{mode}.raw")
                cases.append([i, w, h, size, mode])
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    shutil.copyfile(ASSETS / "preprocess.js", tmp_path / "pp.mjs")
    (tmp_path / "check.mjs").write_text("""
import {toSquare} from './pp.mjs';
import fs from 'fs';
const out = [];
for (const [i, w, h, size, mode] of JSON.parse(fs.readFileSync('cases.json'))) {
  const img = new Uint8Array(fs.readFileSync(`img${i}.raw`));
  const ref = new Uint8Array(fs.readFileSync(`ref${i}_${size}_${mode}.raw`));
  const got = toSquare(img, w, h, size, mode);
  let maxd = 0, nd = 0;
  for (let k = 0; k < ref.length; k++) {
    const d = Math.abs(ref[k] - got[k]);
    if (d) nd++;
    maxd = Math.max(maxd, d);
  }
  out.push([maxd, nd / ref.length, got.length === ref.length]);
}
console.log(JSON.stringify(out));
""")
    res = json.loads(subprocess.run([NODE, "check.mjs"], cwd=tmp_path, capture_output=True,
                                    text=True, check=True).stdout)
    assert len(res) == len(cases) and all(ok for _, _, ok in res)
    exact = sum(1 for d, _, _ in res if d == 0)
    assert max(d for d, _, _ in res) <= 1            # never more than one grey level
    assert max(f for _, f, _ in res) <= 0.25
    assert exact >= 0.9 * len(res), res               # and identical bytes almost always


def test_static_server_types_and_csp(tmp_path):
    import threading

    from labtf.serving.static import CSP, is_web_bundle, make_server

    for name in ("index.html", "model.json", "model.tflite", "sw.js"):
        (tmp_path / name).write_text("x")
    (tmp_path / "a.wasm").write_bytes(b"\0asm")
    assert is_web_bundle(tmp_path) and not is_web_bundle(tmp_path / "a.wasm")
    server = make_server(tmp_path, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        with urllib.request.urlopen(f"{base}/a.wasm") as r:
            assert r.headers["Content-Type"] == "application/wasm"
            assert r.headers["Content-Security-Policy"] == CSP
        with urllib.request.urlopen(f"{base}/sw.js") as r:
            assert r.headers["Cache-Control"] == "no-cache"
            assert r.headers["Content-Type"].startswith("text/javascript")
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def bundle(trained_run, tmp_path_factory):
    """The tiny run exported for the web (float32: the random-init tiny model's int8 outputs
    are flat, which makes a top-1 comparison meaningless)."""
    pytest.importorskip("ai_edge_litert")
    _runtime_or_skip()
    from exporters import export

    return export(trained_run.path, "web", tmp_path_factory.mktemp("web") / "app", quantize="none")


def test_bundle_contents(bundle, trained_run):
    from labtf.predict import open_predictor

    cfg = json.loads((bundle / "model.json").read_text())
    assert cfg["classes"] == trained_run.classes and cfg["image_size"] == 64
    assert cfg["resize"] == trained_run.meta.get("resize", "crop")
    for name in ("index.html", "app.js", "preprocess.js", "style.css", "sw.js", "nomodule.js",
                 "manifest.webmanifest", "icon-192.png", "icon-512.png", "litert/litert.js",
                 "litert/wasm-utils.js", "litert/litert_wasm_internal.wasm",
                 "litert/litert_wasm_compat_internal.wasm"):
        assert (bundle / name).is_file(), name
    assert "@litertjs/wasm-utils" not in (bundle / "litert" / "litert.js").read_text()
    sw = (bundle / "sw.js").read_text()
    assert "__CACHE__" not in sw and '"model.tflite"' in sw
    pred = open_predictor(bundle)          # the bundle folder predicts like its .tflite
    inp = pred.interpreter.get_input_details()[0]
    assert list(inp["shape"]) == [1, 64, 64, 3]
    assert list(inp["shape_signature"]) == [1, 64, 64, 3]   # LiteRT.js refuses a dynamic batch
    with pytest.raises(LabtfError, match="already exists"):
        from exporters import export

        export(trained_run.path, "web", bundle, quantize="none")


def test_page_in_headless_chromium(bundle, trained_run, tmp_path):
    """Every test image through the page's file input: same answers as Python on the same
    .tflite, CAM on the device, history, phone width, offline after the first load, and no
    request off loopback."""
    from cdp import chromium_path
    from webdrive import compare, run_page

    from exporters.common import split_samples
    from labtf.predict import open_predictor, predict_files

    if chromium_path() is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    paths = [Path(s.path) for s in split_samples(trained_run, "test")]
    out = run_page(bundle, paths, tmp_path / "profile", screenshot=tmp_path / "page.png")
    classes = trained_run.classes
    py = predict_files(open_predictor(bundle / "model.tflite"), [str(p) for p in paths],
                       top_k=len(classes), with_cam=True)
    probs = np.array([[dict(r.top)[c] for c in classes] for r in py])
    cams = np.array([r.cam for r in py])
    figures = compare(out["results"], probs, cams)
    assert figures["n"] == len(paths) >= 10
    assert figures["top1_agreement"] >= 0.99, figures
    assert figures["max_abs_dp"] <= 1e-3, figures
    assert figures["cam_n"] == 0 or figures["cam_r_min"] >= 0.99, figures
    assert out["history"] == min(len(paths), 20)
    assert out["scroll_width"] <= 360                       # no sideways scrolling on a phone
    assert out["manifest_errors"] == []
    assert (tmp_path / "page.png").stat().st_size > 10_000
    assert out["offline_ready"] and out["offline"]["ready"] and not out["offline"]["error"]
    np.testing.assert_allclose(out["offline"]["probs"], out["results"][0]["probs"], atol=1e-6)
    off_device = [u for u in out["urls"]
                  if not u.startswith((out["url"], "data:", "blob:"))]
    assert off_device == [] and out["violations"] == []


def test_page_errors(bundle, tmp_path):
    """A file that is not an image, and a model that does not load, each give one clear line."""
    from cdp import Browser, chromium_path
    from webdrive import BundleServer

    if chromium_path() is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    (broken / "model.tflite").write_bytes(b"not a model")
    notimage = tmp_path / "notes.jpg"
    notimage.write_text("field notes, not a photo")
    good, bad = BundleServer(bundle), BundleServer(broken)
    try:
        with Browser(chromium_path(), tmp_path / "profile", timeout=60) as browser:
            page = browser.open(good.url)
            assert page.wait_for("window.labtf && window.labtf.ready", 120)
            page.upload("#file", notimage)
            assert page.wait_for("window.labtf.count > 0", 30)
            assert "notes.jpg is not an image" in page.eval("document.getElementById('error').textContent")
            page = browser.open(bad.url)
            assert page.wait_for("window.labtf && window.labtf.error", 120)
            text = page.eval("document.getElementById('error').textContent")
            assert text.startswith("The model could not be loaded")
            assert page.eval("document.getElementById('file').disabled")
    finally:
        good.stop()
        bad.stop()
