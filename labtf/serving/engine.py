"""The edge server's model side: a predictor pool, bounded concurrency, micro-batching,
admission control.

:class:`EdgeModel` opens an artifact through :func:`labtf.predict.open_predictor`
(the Predictor table: run folder, SavedModel, .tflite, .onnx, ...). Predictors
that are not thread-safe (TF-Lite interpreters) get one instance per worker.
Image bytes are decoded with Pillow exactly like ``labtf predict``, so answers
equal in-process prediction on the same artifact.

Admission (load shedding): a request's decoded pixels are counted from the image
headers before anything is decoded; over the per-request budget it gets 413 at once.
Requests over :data:`HEAVY_PIXELS` decode one at a time in their own lane, so a flood
of large images never delays small ones: while that lane is busy another large
request gets 503 at once, and one whose decode would not fit in the time left
(at the decode rate measured so far) gets 413 before any work. A request holds its
``max_pending`` slot until its worker threads have really stopped (not just until
it timed out), and work past the deadline stops between images.
"""
from __future__ import annotations

import asyncio
import io
import logging
import os
import queue
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from labtf.images import MAX_PIXELS  # noqa: F401  one cap for every reader (re-exported)
from labtf.serving.protocol import RestError, labtf_signatures

log = logging.getLogger(__name__)

#: Default decoded-pixel budget of one request (all its images together); 413 above.
MAX_REQUEST_PIXELS = 100_000_000

#: Requests decoding more pixels than this take the one-at-a-time heavy lane.
HEAVY_PIXELS = 4_000_000


class Expired(Exception):
    """Work abandoned because its request's deadline passed."""


def model_identity(artifact: Path, meta: dict | None = None) -> tuple[str, int]:
    """Default (name, version) as TF Serving would serve the same run.

    A SavedModel repository's ``<name>/<version>``; otherwise the run's name as
    ``labtf export --format saved_model`` names it (the run folder, or the
    ``source_run`` recorded in the artifact's ``labtf.json``), else ``labtf``.
    """
    from exporters.saved_model import find_version_dir, serving_name

    artifact = Path(artifact).resolve()
    if artifact.is_dir():
        folder = find_version_dir(artifact)
        if folder is not None and folder.name.isdigit() and folder != artifact.parent:
            return folder.parent.name, int(folder.name)
        if (artifact / "run.json").is_file():
            return serving_name(artifact), 1
    src = (meta or {}).get("source_run")
    return (serving_name(src) if src else "labtf"), 1


class EdgeModel:
    """An artifact served by ``labtf serve``.

    Args:
        artifact: anything ``labtf predict`` opens.
        workers: threads running inference (and predictor instances when needed).
        name: model name [from the artifact].
        version: served version [from the artifact, else 1].
        batch_ms: wait up to this long to merge concurrent requests (0: off).
        max_batch: most images per merged call.
        max_pending: requests waiting or running before new ones get 503.
        max_request_pixels: decoded pixels one request may carry (413 above).

    Raises:
        LabtfError: the artifact cannot be opened or has no CAM output.
    """

    def __init__(self, artifact: str | Path, workers: int = 1, name: str | None = None,
                 version: int | None = None, batch_ms: float = 0.0, max_batch: int = 16,
                 max_pending: int = 64, max_request_pixels: int = MAX_REQUEST_PIXELS) -> None:
        from labtf.errors import LabtfError
        from labtf.predict import open_predictor

        self.artifact = Path(artifact)
        self.workers = max(1, int(workers))
        first = open_predictor(self.artifact)
        default_name, default_version = model_identity(self.artifact, getattr(first, "meta", None))
        self.name, self.version = name or default_name, int(version or default_version)
        if not first.has_cam:
            raise LabtfError(f"{artifact}: has no CAM output; re-export it with 'labtf export'")
        shared = type(first).__name__ in ("SavedModelPredictor", "KerasPredictor", "ONNXPredictor")
        preds = [first] + ([] if shared else [self._reopen(first) for _ in range(self.workers - 1)])
        self._pool: queue.SimpleQueue = queue.SimpleQueue()
        for i in range(self.workers):
            self._pool.put(preds[0] if shared else preds[i])
        self.classes, self.image_size, self.resize = first.classes, first.image_size, first.resize
        self.kind = type(first).__name__
        probs, cam = first.predict_batch_with_cam(
            np.full((1, self.image_size, self.image_size, 3), 127.0, np.float32))   # warm-up
        self.signatures = labtf_signatures(self.image_size, len(self.classes), cam.shape[1:])
        self.batch_ms, self.max_batch, self.max_pending = float(batch_ms), int(max_batch), max_pending
        self.max_request_pixels = int(max_request_pixels)
        self.executor = ThreadPoolExecutor(self.workers, thread_name_prefix="labtf-infer")
        self.heavy_lane = ThreadPoolExecutor(1, thread_name_prefix="labtf-heavy")
        self.pending = 0          # admitted requests whose threads have not all finished
        self.heavy_busy = 0       # of those, in the heavy lane
        self.decode_rate = _measure_decode_rate(self.image_size, self.resize)   # pixels/s
        self._sem: asyncio.Semaphore | None = None
        self._queue: asyncio.Queue | None = None
        self._batcher: asyncio.Task | None = None

    def _reopen(self, first):
        if type(first).__name__ == "TFLitePredictor":
            return type(first)(self.artifact, num_threads=max(1, (os.cpu_count() or 1) // self.workers))
        return type(first)(self.artifact)

    def info(self) -> dict:
        """What the metadata endpoint adds under ``labtf``."""
        return {"classes": self.classes, "image_size": self.image_size, "resize": self.resize,
                "artifact": self.artifact.name, "predictor": self.kind,
                "batch_ms": self.batch_ms, "workers": self.workers}

    # -- decoding --------------------------------------------------------------------
    @staticmethod
    def scan(blobs: list[bytes]) -> int:
        """Decoded pixels of encoded images, read from their headers only (nothing decoded).

        Raises:
            RestError: 400 naming an instance that is not an image or is over :data:`MAX_PIXELS`.
        """
        from PIL import Image

        total = 0
        for i, data in enumerate(blobs):
            where = f"instances[{i}].image_bytes"
            try:
                with Image.open(io.BytesIO(data)) as im:
                    w, h = im.size
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
                raise RestError(400, f"{where}: not an image (expected JPEG, PNG, GIF, BMP, "
                                     "WebP or TIFF bytes)") from None
            if w * h > MAX_PIXELS:
                raise RestError(400, f"{where}: image is {w}x{h} px, more than "
                                     f"{MAX_PIXELS // 1_000_000} MP")
            total += w * h
        return total

    def decode(self, blobs: list[bytes], deadline: float | None = None) -> np.ndarray:
        """Encoded images -> float32 (N,S,S,3), as ``labtf predict`` decodes files.

        Args:
            blobs: encoded images.
            deadline: ``time.monotonic()`` after which the rest is abandoned.

        Raises:
            RestError: 400 naming the instance that is not a readable image.
            Expired: the deadline passed (checked before each image).
        """
        from PIL import Image

        from labtf.images import BadImage, load_rgb_bytes, to_square

        self.scan(blobs)
        out, t0, pixels = [], time.monotonic(), 0
        for i, data in enumerate(blobs):
            if deadline is not None and time.monotonic() > deadline:
                raise Expired(f"abandoned after {i} of {len(blobs)} image(s)")
            where = f"instances[{i}].image_bytes"
            try:
                rgb = load_rgb_bytes(data, where)
            except BadImage as exc:
                raise RestError(400, str(exc)) from None
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
                raise RestError(400, f"{where}: not an image (expected JPEG, PNG, GIF, BMP, "
                                     "WebP or TIFF bytes)") from None
            pixels += rgb.shape[0] * rgb.shape[1]
            out.append(to_square(rgb, self.image_size, self.resize))
        took = time.monotonic() - t0
        if pixels >= 1_000_000 and took > 0:   # learn the decode rate from sizeable work only
            self.decode_rate = 0.7 * self.decode_rate + 0.3 * pixels / took
        return np.stack(out).astype(np.float32)

    # -- inference -------------------------------------------------------------------
    def _run(self, images: np.ndarray, deadline: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        if deadline is not None and time.monotonic() > deadline:
            raise Expired("abandoned before inference")
        pred = self._pool.get()
        try:
            return pred.predict_batch_with_cam(images)
        finally:
            self._pool.put(pred)

    async def start(self) -> None:
        """Create the asyncio pieces (call inside the serving loop)."""
        self._sem = asyncio.Semaphore(self.workers)
        if self.batch_ms > 0:
            self._queue = asyncio.Queue()
            self._batcher = asyncio.create_task(self._batch_loop())

    async def close(self) -> None:
        """Stop the batcher and the worker threads (after in-flight requests finish)."""
        if self._batcher is not None:
            self._batcher.cancel()
            try:
                await self._batcher
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=True)
        self.heavy_lane.shutdown(wait=True)

    def admit_check(self) -> None:
        """503 at once when ``max_pending`` requests are admitted (call before reading a body).

        Raises:
            RestError: 503.
        """
        if self.pending >= self.max_pending:
            raise RestError(503, f"server busy: {self.pending} request(s) pending "
                                 f"(limit {self.max_pending}, --max-pending); retry later")

    def _admit(self, blobs: list[bytes] | None, deadline: float | None) -> bool:
        """Refuse up front what cannot be done; returns whether the request is heavy."""
        self.admit_check()
        if blobs is None:
            return False
        pixels = self.scan(blobs)
        if pixels > self.max_request_pixels:
            raise RestError(413, f"the request's images decode to {pixels / 1e6:.0f} MP, more than "
                                 f"the {self.max_request_pixels / 1e6:g} MP budget per request "
                                 "(--max-request-mp); send fewer or smaller images")
        if pixels <= HEAVY_PIXELS:
            return False
        if self.heavy_busy:
            raise RestError(503, f"server busy decoding another large request ({pixels / 1e6:.0f} MP "
                                 f"here; over {HEAVY_PIXELS / 1e6:g} MP decode one at a time); "
                                 "retry later")
        need = pixels / self.decode_rate
        if deadline is not None and time.monotonic() + need > deadline:
            raise RestError(413, f"the request's images ({pixels / 1e6:.0f} MP) would take about "
                                 f"{need:.1f} s to decode at {self.decode_rate / 1e6:.0f} MP/s, more "
                                 "than the time left (--timeout-s); send smaller images")
        return True

    async def infer(self, blobs: list[bytes] | None = None, pixels: np.ndarray | None = None,
                    deadline: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Admit, decode (bytes) and predict; probabilities (N,C) and CAM (N,h,w).

        Args:
            blobs: encoded images, or
            pixels: float32 (N,S,S,3).
            deadline: ``time.monotonic()`` by which the answer is needed; work still
                queued or between images after it is abandoned.

        Raises:
            RestError: 400 bad image, 413 over the pixel budget or too slow to decode
                in time, 503 too many pending requests or the heavy lane busy.
            Expired: the deadline passed inside a worker.
        """
        heavy = self._admit(blobs, deadline)
        slot = _Slot(self, heavy)
        try:
            images = pixels if blobs is None else await slot.run(
                self.heavy_lane if heavy else self.executor, self.decode, blobs, deadline)
            if self._queue is None:
                async with self._sem:
                    return await slot.run(self.executor, self._run, images, deadline)
            fut = asyncio.get_running_loop().create_future()
            await self._queue.put((images, fut))
            return await fut
        finally:
            slot.finish()

    async def _batch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self._queue.get()]
            count = len(items[0][0])
            deadline = loop.time() + self.batch_ms / 1000.0
            while count < self.max_batch:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), left)
                except asyncio.TimeoutError:
                    break
                items.append(item)
                count += len(item[0])
            await self._sem.acquire()
            asyncio.create_task(self._run_items(items))

    async def _run_items(self, items: list) -> None:
        loop = asyncio.get_running_loop()
        try:
            live = [(x, f) for x, f in items if not f.done()]
            if not live:
                return
            batch = np.concatenate([x for x, _ in live])
            try:
                probs, cams = await loop.run_in_executor(self.executor, self._run, batch)
            except Exception as exc:  # noqa: BLE001  handed to every waiting request
                for _, f in live:
                    if not f.done():
                        f.set_exception(exc)
                return
            start = 0
            for x, f in live:
                if not f.done():
                    f.set_result((probs[start:start + len(x)], cams[start:start + len(x)]))
                start += len(x)
            log.debug("micro-batch of %d request(s), %d image(s)", len(live), len(batch))
        finally:
            self._sem.release()


class _Slot:
    """One admitted request's hold on ``pending`` (and the heavy lane): released when the
    request is over *and* every thread it started has returned."""

    def __init__(self, model: EdgeModel, heavy: bool) -> None:
        self.model, self.heavy = model, heavy
        self.open, self.finished, self.released = 0, False, False
        self.loop = asyncio.get_running_loop()
        model.pending += 1
        model.heavy_busy += heavy

    async def run(self, pool: ThreadPoolExecutor, fn, *args):
        """``fn(*args)`` in ``pool``, tracked until the thread returns."""
        cf = pool.submit(fn, *args)
        self.open += 1
        cf.add_done_callback(lambda _: self.loop.call_soon_threadsafe(self._closed))
        return await asyncio.wrap_future(cf)

    def _closed(self) -> None:
        self.open -= 1
        self._release()

    def finish(self) -> None:
        self.finished = True
        self._release()

    def _release(self) -> None:
        if self.finished and not self.open and not self.released:
            self.released = True
            self.model.pending -= 1
            self.model.heavy_busy -= self.heavy


def _measure_decode_rate(size: int, resize: str) -> float:
    """Pixels per second of this machine's decode path (a 1000x1000 PNG), for admission."""
    from PIL import Image

    from labtf.images import load_rgb_bytes, to_square

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (1000, 1000, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=1)
    t0 = time.monotonic()
    to_square(load_rgb_bytes(buf.getvalue()), size, resize)
    return 1_000_000 / max(time.monotonic() - t0, 1e-3)
