"""Web export: a static, offline field app that classifies a photo on the phone.

``labtf export RUN --format web --out DIR`` writes a folder any static https host (or
``labtf serve DIR`` on a laptop) can serve::

    index.html app.js preprocess.js style.css nomodule.js   the page (no inline script/style)
    model.tflite    batch-1 TF-Lite model (LiteRT.js refuses a dynamic batch dimension)
    model.json      labels, input size, resize mode, CAM scaling: the page reads these
                    itself (LiteRT.js ignores TF-Lite metadata)
    litert/         LiteRT.js (npm ``@litertjs/core``) ES module + its two wasm builds
    sw.js manifest.webmanifest icon-*.png   offline cache and home-screen install

The page runs the model on the device's CPU (LiteRT.js wasm/XNNPACK), reads both outputs
(``probabilities`` and the top-class ``cam``), resizes photos with a port of Pillow's
resampling (same pixels as ``labtf predict``) and draws the CAM overlay. Its Content-
Security-Policy only allows its own origin, so nothing leaves the device.

The runtime comes from npm (not downloaded here): :data:`NPM_INSTALL` is the line to run.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from exporters import Option, takes_options
from exporters.common import atomic_dir
from labtf import __version__
from labtf.errors import LabtfError
from labtf.serving.static import is_web_bundle

log = logging.getLogger(__name__)

#: The npm package the page runs on (pinned: the page uses its 2.x API).
RUNTIME_PACKAGE, RUNTIME_VERSION = "@litertjs/core", "2.5.3"
#: Where labtf looks for ``node_modules`` when neither $LABTF_WEB_RUNTIME nor ./node_modules has it.
CACHE_PREFIX = "~/.cache/labtf/web"
#: The command that brings the runtime files.
NPM_INSTALL = f"npm install --prefix {CACHE_PREFIX} {RUNTIME_PACKAGE}@{RUNTIME_VERSION}"
#: Wasm builds shipped: relaxed-SIMD (current Chrome/Edge/Firefox) and the compat build
#: (browsers without relaxed SIMD, e.g. Safari). LiteRT.js picks one at run time.
WASM_BUILDS = ("litert_wasm_internal", "litert_wasm_compat_internal")
#: Static page files (package data beside this module).
ASSETS = Path(__file__).with_name("web_assets")
PAGE_FILES = ("index.html", "app.js", "preprocess.js", "style.css", "nomodule.js")
#: Classes shown per result.
TOP_K = 3

#: Options of :func:`export_web` (besides quantize and overwrite).
OPTIONS = {
    "calibration_images": Option(100, (int,), "int8: train-split images for calibration"),
    "int8_rounding": Option("adaptive", (str,), "int8 weights: adaptive | nearest"),
}


def cache_prefix() -> Path:
    """``$LABTF_CACHE/labtf/web`` or ``~/.cache/labtf/web``."""
    base = os.environ.get("LABTF_CACHE") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "labtf" / "web"


def runtime_candidates() -> list[Path]:
    """Folders searched for ``@litertjs/core``, in order."""
    found = []
    env = os.environ.get("LABTF_WEB_RUNTIME")
    if env:
        env_path = Path(env).expanduser()
        found += [env_path, env_path / "node_modules"]
    found += [Path.cwd() / "node_modules", cache_prefix() / "node_modules"]
    return found


def find_runtime() -> Path | None:
    """The ``node_modules`` folder holding a usable LiteRT.js, or None."""
    for folder in runtime_candidates():
        core = folder / "@litertjs" / "core"
        needed = [core / "dist" / "index.js", folder / "@litertjs" / "wasm-utils" / "dist" / "index.js"]
        needed += [core / "wasm" / f"{b}.{ext}" for b in WASM_BUILDS for ext in ("js", "wasm")]
        if all(p.is_file() for p in needed):
            version = json.loads((core / "package.json").read_text()).get("version", "")
            if version.split(".")[0] == RUNTIME_VERSION.split(".")[0]:
                return folder
            log.warning("%s has %s %s; the page needs %s 2.x", folder, RUNTIME_PACKAGE, version,
                        RUNTIME_PACKAGE)
    return None


def require_runtime() -> Path:
    """Like :func:`find_runtime`, for exporting.

    Raises:
        LabtfError: not found; the message names the npm command that installs it.
    """
    folder = find_runtime()
    if folder is None:
        raise LabtfError(f"the web app needs the LiteRT.js runtime from npm, not found in "
                         f"$LABTF_WEB_RUNTIME, ./node_modules or {CACHE_PREFIX}; run: {NPM_INSTALL}")
    return folder


def copy_runtime(node_modules: Path, target: Path) -> str:
    """Copy LiteRT.js into ``target`` as plain same-origin files.

    The package's ES module imports ``@litertjs/wasm-utils`` by bare name; browsers need an
    import map for that (an inline script, which the CSP forbids), so the import is
    rewritten to the copied file. Source-map comments are dropped (no .map is shipped).

    Returns:
        The runtime's version.
    """
    core = node_modules / "@litertjs" / "core"
    target.mkdir(parents=True, exist_ok=True)
    strip = re.compile(r"^//# sourceMappingURL=.*$", re.M)
    main = (core / "dist" / "index.js").read_text()
    main, n = re.subn(r"""from\s*["']@litertjs/wasm-utils["']""", 'from "./wasm-utils.js"', main)
    if n != 1:
        raise LabtfError(f"{core}: unexpected LiteRT.js layout (import of wasm-utils not found); "
                         f"install the pinned version: {NPM_INSTALL}")
    (target / "litert.js").write_text(strip.sub("", main))
    utils = (node_modules / "@litertjs" / "wasm-utils" / "dist" / "index.js").read_text()
    (target / "wasm-utils.js").write_text(strip.sub("", utils))
    for build in WASM_BUILDS:
        for ext in ("js", "wasm"):
            shutil.copyfile(core / "wasm" / f"{build}.{ext}", target / f"{build}.{ext}")
    version = json.loads((core / "package.json").read_text())["version"]
    (target / "NOTICE.txt").write_text(
        f"{RUNTIME_PACKAGE} {version} and @litertjs/wasm-utils (Apache-2.0), copied from npm.\n")
    return version


def write_icons(folder: Path, colour=(15, 82, 87)) -> list[str]:
    """Home-screen icons (a lens over a heat spot) at 192 and 512 px."""
    from PIL import Image, ImageDraw

    names = []
    for side in (192, 512):
        img = Image.new("RGB", (side, side), colour)
        d = ImageDraw.Draw(img)
        u = side / 16
        d.ellipse([5 * u, 5 * u, 10 * u, 10 * u], fill=(245, 130, 32))
        d.ellipse([3 * u, 3 * u, 11 * u, 11 * u], outline="white", width=max(2, int(u)))
        d.line([10 * u, 10 * u, 13.5 * u, 13.5 * u], fill="white", width=max(3, int(1.4 * u)))
        img.save(folder / f"icon-{side}.png")
        names.append(f"icon-{side}.png")
    return names


def manifest(name: str, icons: list[str]) -> dict:
    """The web app manifest (standalone, installable)."""
    return {"name": f"labtf: {name}", "short_name": name[:12] or "labtf", "start_url": "./",
            "scope": "./", "display": "standalone", "orientation": "portrait",
            "background_color": "#ffffff", "theme_color": "#0f5257",
            "description": "Classify a photo on this device and see where the model looked.",
            "icons": [{"src": i, "sizes": f"{i[5:-4]}x{i[5:-4]}", "type": "image/png",
                       "purpose": "any"} for i in icons]}


def service_worker(files: list[str], digest: str) -> str:
    """``sw.js`` with its cache name (the bundle's digest) and precache list filled in."""
    template = (ASSETS / "sw.js").read_text()
    return (template.replace("__CACHE__", f"labtf-{digest}")
            .replace("__FILES__", json.dumps(files)))


def page_config(run, quantize: str, tflite_meta: dict, runtime_version: str, digest: str) -> dict:
    """``model.json``: everything the page needs that LiteRT.js does not read from the model."""
    return {"name": Path(run.path).name, "classes": list(run.classes),
            "image_size": int(tflite_meta["image_size"]), "resize": tflite_meta["resize"],
            "cam_normalized": bool(tflite_meta.get("cam_normalized", True)),
            "quantize": quantize, "top_k": min(TOP_K, len(run.classes)),
            "input": "image: float32 RGB 0..255, shape (1, S, S, 3)",
            "outputs": {"probabilities": "(1, C)", "cam": "(1, h, w) top-class CAM"},
            "runtime": f"{RUNTIME_PACKAGE}@{runtime_version}", "model_sha256": digest,
            "labtf": __version__,
            "exported": datetime.now(timezone.utc).isoformat(timespec="seconds")}


@takes_options("web", OPTIONS)
def export_web(run, path: str | Path, *, quantize: str = "int8", overwrite: bool = False,
               calibration_images: int = 100, int8_rounding: str = "adaptive") -> Path:
    """Write the offline web app for ``run`` into the folder ``path``.

    Args:
        run: a :class:`labtf.run.Run`.
        path: the bundle folder (must not exist unless ``overwrite``).
        quantize: ``int8`` (default: 4x smaller download), ``none`` (float32) or ``float16``.
        overwrite: replace an existing bundle.
        calibration_images: int8 calibration images from the train split.
        int8_rounding: ``adaptive`` or ``nearest`` (see :mod:`exporters.tflite`).

    Returns:
        The bundle folder.

    Raises:
        LabtfError: the runtime is not installed (names the npm command), the folder exists,
            or conversion failed.
    """
    from exporters.tflite import export_tflite, read_embedded

    node_modules = require_runtime()
    target = Path(path)
    if target.exists() and not overwrite:
        raise LabtfError(f"{target} already exists; pass --overwrite to replace it or choose "
                         "another --out")
    with tempfile.TemporaryDirectory(prefix="labtf_web_") as tmp:
        model = export_tflite(run, tmp, quantize=quantize, calibration_images=calibration_images,
                              int8_rounding=int8_rounding, batch=1)
        meta = read_embedded(model)
        with atomic_dir(target, overwrite=overwrite) as out:
            shutil.copyfile(model, out / "model.tflite")
            version = copy_runtime(node_modules, out / "litert")
            for name in PAGE_FILES:
                shutil.copyfile(ASSETS / name, out / name)
            icons = write_icons(out)
            (out / "manifest.webmanifest").write_text(
                json.dumps(manifest(Path(run.path).name, icons), indent=2) + "\n")
            model_digest = hashlib.sha256((out / "model.tflite").read_bytes()).hexdigest()
            (out / "model.json").write_text(json.dumps(
                page_config(run, quantize, meta, version, model_digest), indent=2) + "\n")
            files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
            digest = hashlib.sha256()
            for name in files:
                digest.update(name.encode() + b"\0" + (out / name).read_bytes())
            # The wasm build is cached when the page has loaded it (it knows which one it uses).
            precache = ["./"] + [f for f in files if not f.startswith("litert/litert_wasm_")]
            (out / "sw.js").write_text(service_worker(precache, digest.hexdigest()[:16]))
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    log.info("web app written: %s (%.1f MB; serve it with 'labtf serve %s')", target, size / 1e6,
             target)
    return target


def detect(path: Path) -> bool:
    """``path`` is a web app folder written by :func:`export_web`."""
    return is_web_bundle(Path(path))


def open_artifact(path: Path):
    """FORMATS["web"].open: the bundle's batch-1 ``model.tflite`` as a TFLitePredictor."""
    from exporters.tflite import TFLitePredictor

    return TFLitePredictor(Path(path) / "model.tflite")
