"""The data plane, independent of gRPC: model + backend, batcher, style vectors, frame pipeline.

A frame goes decode (codec threads) → scale to ``process_max_side`` → batcher →
backend (inference threads) → scale to the output size → encode (codec threads).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image

from stylecast.backends.base import Backend, BackendOptions, create_backend
from stylecast.model.package import ModelPackage
from stylecast.model.preprocess import style_image_uint8, to_uint8
from stylecast.server import codecs
from stylecast.server.batcher import Batcher, BatchResult
from stylecast.server.config import ServerConfig
from stylecast.server.errors import InvalidArgument, NotFound
from stylecast.server.metrics import Metrics
from stylecast.server.models import choose_backend, find_package
from stylecast.server.styles import StyleLibrary, StyleRecord, nearest, png_bytes

log = logging.getLogger(__name__)
THUMBNAIL_SIDE = 128


@dataclass(frozen=True)
class ImageInput:
    data: bytes
    pixel_format: str = "encoded"   # encoded | rgb24 | rgba32 | gray8
    width: int = 0                  # raw formats only
    height: int = 0


@dataclass(frozen=True)
class OutputSpec:
    encoding: str = "jpeg"          # jpeg | png | webp | raw
    quality: int = 0                # 0 = default
    width: int = 0                  # 0 = follow the input
    height: int = 0


@dataclass(frozen=True)
class StyleSpec:
    weights: tuple[tuple[str, float], ...]   # (style id, weight); normalised by the engine
    strength: float = 1.0


@dataclass(frozen=True)
class FrameResult:
    data: bytes
    width: int
    height: int
    encoding: str
    batch_size: int
    timings_ms: dict[str, float]    # queue, decode, infer, encode, total


class Engine:
    """Owns the backend, its executors, the batcher and the style library."""

    def __init__(self, config: ServerConfig, package: ModelPackage, backend: Backend, fmt: str,
                 library: StyleLibrary, inference: ThreadPoolExecutor, metrics: Metrics | None = None) -> None:
        self.config, self.package, self.backend, self.format = config, package, backend, fmt
        self.library = library
        self.metrics = metrics if metrics is not None else Metrics()
        self._inference = inference
        self._codecs = ThreadPoolExecutor(config.codec_threads, thread_name_prefix="stylecast-codec")
        run_batch = self.metrics.counting_batches(backend.name, backend.stylize)
        self._batcher = Batcher(run_batch, inference, workers=config.workers,
                                max_batch=config.max_batch, max_wait_s=config.max_wait_ms / 1000)
        self._vectors: dict[str, np.ndarray] = {}

    @classmethod
    async def create(cls, config: ServerConfig, metrics: Metrics | None = None) -> Engine:
        """Find and verify the package, load it into the chosen backend, open the style library."""
        metrics = metrics if metrics is not None else Metrics()
        package = find_package(config.models_dir, config.model, config.model_version)
        name, fmt = choose_backend(config, package)
        backend = create_backend(name)
        inference = ThreadPoolExecutor(config.workers, thread_name_prefix="stylecast-infer")
        options = BackendOptions(format=fmt, threads=config.threads, workers=config.workers, xla=config.xla)

        progress = metrics.model_loading(package.name, name)

        def load() -> None:
            package.verify([fmt], progress)
            backend.load(package, options)

        started = time.perf_counter()
        try:
            await asyncio.get_running_loop().run_in_executor(inference, load)
        except Exception:
            metrics.model_load_failed(package.name, name)
            raise
        metrics.model_loaded(package.name, package.version, name, fmt, time.perf_counter() - started,
                             backend.memory_bytes)
        library = StyleLibrary(config.styles_db)
        await library.open()
        metrics.styles.set(await library.count())
        log.info("serving model %s (%s) with backend %s", package.key, fmt, name)
        return cls(config, package, backend, fmt, library, inference, metrics)

    @property
    def model_key(self) -> tuple[str, str]:
        return self.package.name, self.package.version

    async def close(self) -> None:
        self.metrics.model_unloaded(*self.model_key, self.backend.name, self.format)
        await self._batcher.close()
        await self.library.close()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._inference, self.backend.close)
        self._inference.shutdown(wait=True)
        self._codecs.shutdown(wait=True)

    async def codec(self, fn, *args):
        """Run ``fn(*args)`` on the codec threads."""
        return await asyncio.get_running_loop().run_in_executor(self._codecs, fn, *args)

    async def predict(self, style_uint8: np.ndarray) -> np.ndarray:
        """One 256²×3 uint8 normalised style image → its D-vector."""
        batch = style_uint8[None].astype(np.float32) / 255.0
        out = await asyncio.get_running_loop().run_in_executor(self._inference, self.backend.predict_style, batch)
        return np.asarray(out, np.float32).reshape(-1)

    @property
    def pending_frames(self) -> int:
        """Frames waiting for an inference batch, over all streams."""
        return self._batcher.pending

    async def infer(self, content: np.ndarray, vector: np.ndarray) -> BatchResult:
        """Stylize one H×W×3 float frame with one vector, batched with same-size frames."""
        key = (*self.model_key, self.format, *content.shape[:2])
        self.metrics.queued_frames.set(self.pending_frames + 1)
        try:
            return await self._batcher.submit(key, content, vector)
        finally:
            self.metrics.queued_frames.set(self.pending_frames)

    # ------------------------------------------------------------------ styles

    def _normalise(self, image: ImageInput) -> np.ndarray:
        rgb, _ = codecs.decode(image.data, image.pixel_format, image.width, image.height,
                               max_pixels=self.config.max_pixels)
        return style_image_uint8(Image.fromarray(rgb))

    async def register_style(self, image: ImageInput, name: str) -> tuple[StyleRecord, bool]:
        """Store a style (id = sha256 of its normalised image) and its vector; idempotent."""
        normalised = await self.codec(self._normalise, image)
        style_id = hashlib.sha256(normalised.tobytes()).hexdigest()
        existing = await self.library.get(style_id)
        if existing is not None:
            return existing, False
        vector = await self.predict(normalised)
        png = await self.codec(png_bytes, normalised)
        record, created = await self.library.add(style_id, name, png, (*self.model_key, vector))
        self._vectors[style_id] = vector
        if created:
            self.metrics.styles.inc()
        return record, created

    async def get_style(self, style_id: str) -> StyleRecord:
        record = await self.library.get(style_id)
        if record is None:
            raise NotFound(f"style {style_id!r} not found; register it with RegisterStyle first")
        return record

    async def delete_style(self, style_id: str) -> bool:
        self._vectors.pop(style_id, None)
        deleted = await self.library.delete(style_id)
        if deleted:
            self.metrics.styles.dec()
        return deleted

    async def thumbnail(self, style_id: str) -> bytes:
        png = await self.library.image(style_id)
        if png is None:
            raise NotFound(f"style {style_id!r} not found")

        def encode() -> bytes:
            rgb, _ = codecs.decode(png, max_pixels=self.config.max_pixels)
            return codecs.encode(codecs.resize(rgb, (THUMBNAIL_SIDE, THUMBNAIL_SIDE)), "jpeg", 85)

        return await self.codec(encode)

    async def style_vector(self, style_id: str) -> np.ndarray:
        """The current model's vector of a stored style, computed and stored on first use."""
        if (vec := self._vectors.get(style_id)) is not None:
            return vec
        vec = await self.library.vector(style_id, *self.model_key)
        if vec is None:
            png = await self.library.image(style_id)
            if png is None:
                raise NotFound(f"style {style_id!r} not found; register it with RegisterStyle first")
            rgb, _ = await self.codec(lambda: codecs.decode(png, max_pixels=self.config.max_pixels))
            vec = await self.predict(rgb)
            await self.library.put_vector(style_id, *self.model_key, vec)
        self._vectors[style_id] = vec
        return vec

    async def blend_vector(self, weights: tuple[tuple[str, float], ...]) -> np.ndarray:
        """Σ wᵢ·vᵢ with the weights normalised to sum to 1."""
        if not weights:
            raise InvalidArgument("no style given: set StreamConfig.style_id or a non-empty blend")
        w = np.array([wt for _, wt in weights], np.float64)
        if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise InvalidArgument(f"blend weights must be >= 0 with a positive sum, got {w.tolist()}")
        vectors = [await self.style_vector(sid) for sid, _ in weights]
        return (np.tensordot(w / w.sum(), np.stack(vectors), axes=1)).astype(np.float32)

    async def search(self, *, style_id: str = "", image: ImageInput | None = None,
                     limit: int = 10) -> list[tuple[StyleRecord, float]]:
        """Stored styles nearest to a stored style (itself excluded) or to an image's style."""
        if style_id:
            query = await self.style_vector(style_id)
        elif image is not None:
            query = await self.predict(await self.codec(self._normalise, image))
        else:
            raise InvalidArgument("SearchStyles needs a style_id or an image")
        for missing in await self.library.missing_vectors(*self.model_key):
            await self.style_vector(missing)
        ids, matrix = await self.library.vectors(*self.model_key)
        out = []
        for sid, score in nearest(query, ids, matrix, limit, exclude=style_id or None):
            if (record := await self.library.get(sid)) is not None:
                out.append((record, score))
        return out

    # ------------------------------------------------------------------ frames

    async def session(self, style: StyleSpec, output: OutputSpec, process_max_side: int = 0) -> Session:
        """Resolve a style spec into a :class:`Session` that stylizes frames."""
        if not 0.0 <= style.strength <= 1.0:
            raise InvalidArgument(f"strength must be within [0, 1], got {style.strength}")
        if output.encoding not in ("jpeg", "png", "webp", "raw"):
            raise InvalidArgument(f"unknown output encoding {output.encoding!r}")
        if not 0 <= output.quality <= 100:
            raise InvalidArgument(f"quality must be 1..100 (0 = default), got {output.quality}")
        side = process_max_side or self.config.process_max_side
        if side > 8192:
            raise InvalidArgument(f"process_max_side {side} is above 8192")
        vector = await self.blend_vector(style.weights)
        return Session(self, vector, style.strength, output, side)


class Session:
    """A resolved style plus output options; keeps the content vector for strength < 1.

    The content vector is computed from the first frame processed and refreshed
    every ``content_vector_refresh`` frames, never per frame.
    """

    def __init__(self, engine: Engine, vector: np.ndarray, strength: float, output: OutputSpec,
                 process_max_side: int) -> None:
        self.engine, self.vector, self.strength = engine, vector, strength
        self.output, self.process_max_side = output, process_max_side
        self._content: asyncio.Future | None = None
        self._content_uses = 0

    def _decode(self, image: ImageInput) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        rgb, size = codecs.decode(image.data, image.pixel_format, image.width, image.height,
                                  max_pixels=self.engine.config.max_pixels, draft_side=self.process_max_side)
        small = codecs.resize(rgb, codecs.fit_within(size, self.process_max_side))
        return small, small.astype(np.float32) / 255.0, size

    def _encode(self, out: np.ndarray, size: tuple[int, int]) -> tuple[bytes, tuple[int, int]]:
        target = codecs.output_size(size, self.output.width, self.output.height)
        if max(target) > 16384:
            raise InvalidArgument(f"output size {target[0]}x{target[1]} is above 16384 per side")
        img = codecs.resize(to_uint8(out), target)
        return codecs.encode(img, self.output.encoding, self.output.quality), target

    def _content_vector(self, small: np.ndarray) -> asyncio.Future:
        fut = self._content
        stale = (fut is None or self._content_uses >= self.engine.config.content_vector_refresh
                 or (fut.done() and (fut.cancelled() or fut.exception() is not None)))
        if stale:
            normalised = style_image_uint8(Image.fromarray(small))
            fut = self._content = asyncio.ensure_future(self.engine.predict(normalised))
            self._content_uses = 0
        self._content_uses += 1
        return fut

    async def process(self, image: ImageInput, received: float | None = None) -> FrameResult:
        """Stylize one frame; ``received`` (perf_counter) starts the total timing."""
        engine = self.engine
        t0 = time.perf_counter()
        received = t0 if received is None else received
        small, content, size = await engine.codec(self._decode, image)
        t1 = time.perf_counter()
        vector = self.vector
        if self.strength < 1.0:
            v_content = await asyncio.shield(self._content_vector(small))
            vector = (self.strength * vector + (1.0 - self.strength) * v_content).astype(np.float32)
        res = await engine.infer(content, vector)
        t2 = time.perf_counter()
        data, (w, h) = await engine.codec(self._encode, res.image, size)
        t3 = time.perf_counter()
        timings = {"queue": res.queue_s * 1e3 + (t0 - received) * 1e3, "decode": (t1 - t0) * 1e3,
                   "infer": res.infer_s * 1e3, "encode": (t3 - t2) * 1e3, "total": (t3 - received) * 1e3}
        return FrameResult(data, w, h, self.output.encoding, res.batch_size, timings)
