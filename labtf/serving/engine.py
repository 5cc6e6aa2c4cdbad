"""The edge server's model side: a predictor pool, bounded concurrency, micro-batching.

:class:`EdgeModel` opens an artifact through :func:`labtf.predict.open_predictor`
(the Predictor table: run folder, SavedModel, .tflite, .onnx, ...). Predictors
that are not thread-safe (TF-Lite interpreters) get one instance per worker.
Image bytes are decoded with Pillow exactly like ``labtf predict``, so answers
equal in-process prediction on the same artifact.
"""
from __future__ import annotations

import asyncio
import io
import logging
import os
import queue
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from labtf.serving.protocol import RestError, labtf_signatures

log = logging.getLogger(__name__)

#: Largest decoded image accepted (pixels); bigger ones are refused with 400.
MAX_PIXELS = 40_000_000


def model_identity(artifact: Path) -> tuple[str, int]:
    """Default (name, version): ``<name>/<version>`` of a SavedModel, else the file stem."""
    from exporters.saved_model import find_version_dir

    artifact = Path(artifact).resolve()
    if artifact.is_dir():
        folder = find_version_dir(artifact)
        if folder is not None and folder.name.isdigit() and folder != artifact.parent:
            return folder.parent.name, int(folder.name)
        return artifact.name, 1
    return artifact.stem, 1


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

    Raises:
        LabtfError: the artifact cannot be opened or has no CAM output.
    """

    def __init__(self, artifact: str | Path, workers: int = 1, name: str | None = None,
                 version: int | None = None, batch_ms: float = 0.0, max_batch: int = 16,
                 max_pending: int = 64) -> None:
        from labtf.errors import LabtfError
        from labtf.predict import open_predictor

        self.artifact = Path(artifact)
        default_name, default_version = model_identity(self.artifact)
        self.name, self.version = name or default_name, int(version or default_version)
        self.workers = max(1, int(workers))
        first = open_predictor(self.artifact)
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
        self.executor = ThreadPoolExecutor(self.workers, thread_name_prefix="labtf-infer")
        self.pending = 0
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
    def decode(self, blobs: list[bytes]) -> np.ndarray:
        """Encoded images -> float32 (N,S,S,3), as ``labtf predict`` decodes files.

        Raises:
            RestError: 400 naming the instance that is not a readable image.
        """
        from PIL import Image

        from labtf.images import BadImage, load_rgb_bytes, to_square

        out = []
        for i, data in enumerate(blobs):
            where = f"instances[{i}].image_bytes"
            try:
                with Image.open(io.BytesIO(data)) as im:
                    w, h = im.size
                if w * h > MAX_PIXELS:
                    raise RestError(400, f"{where}: image is {w}x{h} px, more than "
                                         f"{MAX_PIXELS // 1_000_000} MP")
                rgb = load_rgb_bytes(data, where)
            except RestError:
                raise
            except BadImage as exc:
                raise RestError(400, str(exc)) from None
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
                raise RestError(400, f"{where}: not an image (expected JPEG, PNG, GIF, BMP, "
                                     "WebP or TIFF bytes)") from None
            out.append(to_square(rgb, self.image_size, self.resize))
        return np.stack(out).astype(np.float32)

    # -- inference -------------------------------------------------------------------
    def _run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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

    async def infer(self, blobs: list[bytes] | None = None,
                    pixels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Decode (bytes) and predict; probabilities (N,C) and CAM (N,h,w).

        Raises:
            RestError: 400 bad image, 503 too many pending requests.
        """
        if self.pending >= self.max_pending:
            raise RestError(503, f"server busy: {self.pending} requests pending "
                                 f"(limit {self.max_pending}); retry later")
        self.pending += 1
        loop = asyncio.get_running_loop()
        try:
            images = pixels if blobs is None else await loop.run_in_executor(
                self.executor, self.decode, blobs)
            if self._queue is None:
                async with self._sem:
                    return await loop.run_in_executor(self.executor, self._run, images)
            fut = loop.create_future()
            await self._queue.put((images, fut))
            return await fut
        finally:
            self.pending -= 1

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
