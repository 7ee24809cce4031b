"""The data plane, independent of gRPC: the serving model, style vectors, frame pipeline.

A frame goes decode (codec threads) → scale to ``process_max_side`` → batcher →
uint8→float, backend, float→uint8 (inference threads) → scale to the output size →
encode (codec threads).  Raw RGB that needs no scaling skips both codec hops.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections import OrderedDict
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image

from stylecast.backends.base import Backend
from stylecast.model.package import ModelPackage
from stylecast.model.preprocess import style_image_uint8, to_float
from stylecast.server import codecs
from stylecast.server.batcher import BatchResult
from stylecast.server.config import ServerConfig
from stylecast.server.errors import InvalidArgument, NotFound, Unavailable
from stylecast.server.loaded_model import LoadedModel
from stylecast.server.loader import Loader
from stylecast.server.metrics import Metrics
from stylecast.server.models import load_order
from stylecast.server.registry import AVAILABLE, ModelRegistry
from stylecast.server.style_store import open_style_store
from stylecast.server.styles import StyleLibrary, StyleRecord, nearest, png_bytes

log = logging.getLogger(__name__)
THUMBNAIL_SIDE = 128
RECENT_SHAPES = 4  # frame sizes a new artifact is warmed up with before its swap


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
    backend: str                    # what ran this frame
    model: str
    version: str


class Engine:
    """Owns the serving model (swapped atomically by the :class:`Loader`), the executors and
    the style library.  Style vectors are kept per (model, version)."""

    def __init__(self, config: ServerConfig, library: StyleLibrary, registry: ModelRegistry,
                 metrics: Metrics | None = None) -> None:
        self.config, self.library, self.registry = config, library, registry
        self.metrics = metrics if metrics is not None else Metrics()
        self.inference = ThreadPoolExecutor(config.workers or os.cpu_count() or 1,  # the most layout() picks
                                            thread_name_prefix="stylecast-infer")
        self._codecs = ThreadPoolExecutor(config.codec_threads, thread_name_prefix="stylecast-codec")
        self.loader = Loader(self)
        self.current: LoadedModel | None = None
        self._retiring: set[LoadedModel] = set()
        self._retire_tasks: set[asyncio.Task] = set()
        self._shapes: OrderedDict[tuple[int, int], None] = OrderedDict()

    @classmethod
    async def create(cls, config: ServerConfig, metrics: Metrics | None = None) -> Engine:
        """Open the style library, find the package (latest version) and serve the first
        artifact of its load order; the rest load in the background."""
        registry = ModelRegistry(config)
        package = registry.find(config.model, config.model_version)
        order = load_order(config, package)
        library = open_style_store(config.style_store, config.redis_password)
        await library.open()
        engine = cls(config, library, registry, metrics)
        try:
            engine.metrics.styles.set(await library.count())
            await engine.loader.load(package, order)
        except BaseException:
            await engine.close()
            raise
        return engine

    # ------------------------------------------------------------ the serving model

    @property
    def model(self) -> LoadedModel:
        if self.current is None:
            raise Unavailable("no model loaded yet; retry shortly")
        return self.current

    @property
    def workers(self) -> int:
        """Frames the serving model runs at once."""
        return self.current.workers if self.current is not None else 1

    @property
    def package(self) -> ModelPackage:
        return self.model.package

    @property
    def backend(self) -> Backend:
        return self.model.backend

    @property
    def format(self) -> str:
        return self.model.format

    @property
    def model_key(self) -> tuple[str, str]:
        return self.model.key

    @property
    def recent_shapes(self) -> tuple[tuple[int, int], ...]:
        """Content sizes of recent frames: a new artifact is warmed up with them before its swap."""
        return tuple(self._shapes)

    async def prepare(self, model: LoadedModel, executor: Executor) -> None:
        """Compute ``model``'s vector of every stored style that lacks one (from the stored
        normalised images), before it serves; runs inference on ``executor``."""
        loop = asyncio.get_running_loop()
        for style_id in await self.library.missing_vectors(*model.key):
            png = await self.library.image(style_id)
            if png is None:  # deleted meanwhile
                continue
            rgb, _ = await self.codec(lambda: codecs.decode(png, max_pixels=self.config.max_pixels))
            batch = to_float(rgb[None])
            vector = np.asarray(await loop.run_in_executor(executor, model.backend.predict_style, batch),
                                np.float32).reshape(-1)
            await self.library.put_vector(style_id, *model.key, vector)

    def activate(self, model: LoadedModel) -> None:
        """Swap ``model`` in: new frames use it; frames leased on the old one finish there."""
        old, self.current = self.current, model
        if old is None:
            self.metrics.model_loaded(*model.labels, model.load_seconds, model.backend.memory_bytes)
            return
        self.metrics.model_swapped(old.labels, model.labels, model.load_seconds, model.backend.memory_bytes)
        self.registry.swapped(model.package)
        self.registry.set(old.package, old.format, state=AVAILABLE)
        self._retiring.add(old)
        task = asyncio.create_task(self._retire(old), name="stylecast-retire")
        self._retire_tasks.add(task)
        task.add_done_callback(self._retire_tasks.discard)

    async def _retire(self, model: LoadedModel) -> None:
        try:
            await model.close(drain=True)
        finally:
            self._retiring.discard(model)
        log.info("retired %s %s:%s", model.package.key, model.backend.name, model.format)

    async def close(self) -> None:
        await self.loader.close()
        models = ([self.current] if self.current is not None else []) + list(self._retiring)
        if self.current is not None:
            self.metrics.model_unloaded(*self.current.labels)
        for task in list(self._retire_tasks):
            task.cancel()
        await asyncio.gather(*self._retire_tasks, return_exceptions=True)
        for model in models:
            await model.close(drain=False)
        self.current = None
        await self.library.close()
        self.inference.shutdown(wait=True)
        self._codecs.shutdown(wait=True)

    async def codec(self, fn, *args):
        """Run ``fn(*args)`` on the codec threads."""
        return await asyncio.get_running_loop().run_in_executor(self._codecs, fn, *args)

    async def predict(self, style_uint8: np.ndarray, model: LoadedModel | None = None) -> np.ndarray:
        """One 256²×3 uint8 normalised style image → its D-vector (by the serving model by default)."""
        model = model or self.model
        with model.lease():
            return (await model.predict(to_float(style_uint8[None])))[0]

    @property
    def pending_frames(self) -> int:
        """Frames waiting for an inference batch, over all streams and loaded models."""
        models = ([self.current] if self.current is not None else []) + list(self._retiring)
        return sum(m.pending for m in models)

    async def infer(self, model: LoadedModel, content: np.ndarray, vector: np.ndarray) -> BatchResult:
        """Stylize one H×W×3 uint8 frame with one vector on ``model`` (the caller holds a lease)."""
        shape = content.shape[:2]
        self._shapes[shape] = None
        self._shapes.move_to_end(shape)
        while len(self._shapes) > RECENT_SHAPES:
            self._shapes.popitem(last=False)
        self.metrics.queued_frames.set(self.pending_frames + 1)
        try:
            return await model.infer(content, vector)
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
        model = self.model
        with model.lease():
            vector = await self.predict(normalised, model)
            png = await self.codec(png_bytes, normalised)
            record, created = await self.library.add(style_id, name, png, (*model.key, vector))
        if created:
            self.metrics.styles.set(await self.library.count())  # shared stores: other replicas add too
        return record, created

    async def get_style(self, style_id: str) -> StyleRecord:
        record = await self.library.get(style_id)
        if record is None:
            raise NotFound(f"style {style_id!r} not found; register it with RegisterStyle first")
        return record

    async def delete_style(self, style_id: str) -> bool:
        deleted = await self.library.delete(style_id)
        if deleted:
            self.metrics.styles.set(await self.library.count())
        return deleted

    async def thumbnail(self, style_id: str) -> bytes:
        png = await self.library.image(style_id)
        if png is None:
            raise NotFound(f"style {style_id!r} not found")

        def encode() -> bytes:
            rgb, _ = codecs.decode(png, max_pixels=self.config.max_pixels)
            return codecs.encode(codecs.resize(rgb, (THUMBNAIL_SIDE, THUMBNAIL_SIDE)), "jpeg", 85)

        return await self.codec(encode)

    async def style_vector(self, style_id: str, model: LoadedModel | None = None) -> np.ndarray:
        """A model's vector of a stored style (the serving model by default), computed and
        stored on first use.  Always read from the store (never a process cache): a style another
        replica deleted is NotFound here too; a stream keeps the vectors it resolved."""
        model = model or self.model
        vec = await self.library.vector(style_id, *model.key)
        if vec is None:
            png = await self.library.image(style_id)
            if png is None:
                raise NotFound(f"style {style_id!r} not found; register it with RegisterStyle first")
            rgb, _ = await self.codec(lambda: codecs.decode(png, max_pixels=self.config.max_pixels))
            vec = await self.predict(rgb, model)
            await self.library.put_vector(style_id, *model.key, vec)
        return vec

    async def blend_vector(self, weights: tuple[tuple[str, float], ...],
                           model: LoadedModel | None = None) -> np.ndarray:
        """Σ wᵢ·vᵢ with the weights normalised to sum to 1."""
        if not weights:
            raise InvalidArgument("no style given: set StreamConfig.style_id or a non-empty blend")
        w = np.array([wt for _, wt in weights], np.float64)
        if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise InvalidArgument(f"blend weights must be >= 0 with a positive sum, got {w.tolist()}")
        model = model or self.model
        vectors = [await self.style_vector(sid, model) for sid, _ in weights]
        return (np.tensordot(w / w.sum(), np.stack(vectors), axes=1)).astype(np.float32)

    async def search(self, *, style_id: str = "", image: ImageInput | None = None,
                     limit: int = 10) -> list[tuple[StyleRecord, float]]:
        """Stored styles nearest to a stored style (itself excluded) or to an image's style."""
        model = self.model
        if style_id:
            query = await self.style_vector(style_id, model)
        elif image is not None:
            query = await self.predict(await self.codec(self._normalise, image), model)
        else:
            raise InvalidArgument("SearchStyles needs a style_id or an image")
        for missing in await self.library.missing_vectors(*model.key):
            await self.style_vector(missing, model)
        ids, matrix = await self.library.vectors(*model.key)
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
        model = self.model
        vector = await self.blend_vector(style.weights, model)
        return Session(self, style, output, side, {model.key: vector})


class Session:
    """A resolved style plus output options for one stream (or one image).

    Each frame runs on the model serving when it reaches inference, with that model
    version's style vector (resolved once per version, so a swap mid-stream is seamless).
    The content vector (strength < 1) is computed from the first frame, refreshed every
    ``content_vector_refresh`` frames and on a version change, never per frame.
    """

    def __init__(self, engine: Engine, style: StyleSpec, output: OutputSpec, process_max_side: int,
                 vectors: dict[tuple[str, str], np.ndarray]) -> None:
        self.engine, self.style, self.strength = engine, style, style.strength
        self.output, self.process_max_side = output, process_max_side
        self._vectors = vectors
        self._content: tuple[tuple[str, str], asyncio.Future] | None = None
        self._content_uses = 0

    def _decode(self, image: ImageInput) -> tuple[np.ndarray, tuple[int, int]]:
        """→ (the frame as uint8, scaled to ``process_max_side``; its original (width, height))."""
        rgb, size = codecs.decode(image.data, image.pixel_format, image.width, image.height,
                                  max_pixels=self.engine.config.max_pixels, draft_side=self.process_max_side)
        return codecs.resize(rgb, codecs.fit_within(size, self.process_max_side)), size

    def _output_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """The (width, height) to answer a frame of ``size`` with; checked before any inference."""
        target = codecs.output_size(size, self.output.width, self.output.height)
        if max(target) > 16384:
            raise InvalidArgument(f"output size {target[0]}x{target[1]} is above 16384 per side")
        return target

    def _encode(self, out: np.ndarray, target: tuple[int, int]) -> bytes:
        return codecs.encode(codecs.resize(out, target), self.output.encoding, self.output.quality)

    def _decode_inline(self, image: ImageInput) -> bool:
        """RGB24 that needs no scaling is a zero-copy view: no codec thread hop."""
        return image.pixel_format == "rgb24" and max(image.width, image.height) <= self.process_max_side

    def _encode_inline(self, out: np.ndarray, target: tuple[int, int]) -> bool:
        """Raw output that needs no scaling is one copy of the array: no codec thread hop."""
        return self.output.encoding == "raw" and target == (out.shape[1], out.shape[0])

    async def _style_vector(self, model: LoadedModel) -> np.ndarray:
        if (vec := self._vectors.get(model.key)) is None:
            vec = self._vectors[model.key] = await self.engine.blend_vector(self.style.weights, model)
        return vec

    def _content_vector(self, small: np.ndarray, model: LoadedModel) -> asyncio.Future:
        key, fut = self._content or (None, None)
        stale = (fut is None or key != model.key or self._content_uses >= self.engine.config.content_vector_refresh
                 or (fut.done() and (fut.cancelled() or fut.exception() is not None)))
        if stale:
            normalised = style_image_uint8(Image.fromarray(small))
            fut = asyncio.ensure_future(self.engine.predict(normalised, model))
            self._content = (model.key, fut)
            self._content_uses = 0
        self._content_uses += 1
        return fut

    async def process(self, image: ImageInput, received: float | None = None) -> FrameResult:
        """Stylize one frame; ``received`` (perf_counter) starts the total timing."""
        engine = self.engine
        t0 = time.perf_counter()
        received = t0 if received is None else received
        if self._decode_inline(image):
            small, size = self._decode(image)
        else:
            small, size = await engine.codec(self._decode, image)
        w, h = target = self._output_size(size)
        t1 = time.perf_counter()
        model = engine.model
        with model.lease():
            vector = await self._style_vector(model)
            if self.strength < 1.0:
                v_content = await asyncio.shield(self._content_vector(small, model))
                vector = (self.strength * vector + (1.0 - self.strength) * v_content).astype(np.float32)
            res = await engine.infer(model, small, vector)
        t2 = time.perf_counter()
        if self._encode_inline(res.image, target):
            data = self._encode(res.image, target)
        else:
            data = await engine.codec(self._encode, res.image, target)
        t3 = time.perf_counter()
        timings = {"queue": res.queue_s * 1e3 + (t0 - received) * 1e3, "decode": (t1 - t0) * 1e3,
                   "infer": res.infer_s * 1e3, "encode": (t3 - t2) * 1e3, "total": (t3 - received) * 1e3}
        return FrameResult(data, w, h, self.output.encoding, res.batch_size, timings,
                           model.backend.name, *model.key)
