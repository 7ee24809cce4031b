"""Frame sessions: a resolved style plus output options, stylizing frames one call each.

A frame goes decode (codec threads) → scale to ``process_max_side`` → the serving slot's
batcher → uint8→float, backend, float→uint8 (inference threads) → scale to the output size
→ encode (codec threads).  Raw RGB that needs no scaling skips both codec hops.

A session runs on the model version its :class:`~stylecast.server.serving.Assignment` names
(a stream's for its whole life, a unary call's for the call); each stylized frame is counted
by version and offered to the online quality sampler.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from stylecast.model.preprocess import style_image_uint8
from stylecast.server import codecs
from stylecast.server.codecs import CodecPool, ImageInput
from stylecast.server.config import ServerConfig
from stylecast.server.errors import InvalidArgument
from stylecast.server.loaded_model import LoadedModel
from stylecast.server.metrics import Metrics
from stylecast.server.online_quality import QualitySampler
from stylecast.server.serving import Assignment, ModelKey, ServingSlot
from stylecast.server.style_vectors import StyleVectors

ENCODINGS = ("jpeg", "png", "webp", "raw")


@dataclass(frozen=True)
class OutputSpec:
    encoding: str = "jpeg"          # jpeg | png | webp | raw
    quality: int = 0                # 0 = default
    width: int = 0                  # 0 = follow the input
    height: int = 0


@dataclass(frozen=True)
class StyleSpec:
    weights: tuple[tuple[str, float], ...]   # (style id, weight); normalised to sum to 1
    strength: float = 1.0


@dataclass(frozen=True)
class FrameResult:
    data: bytes | memoryview        # encoded image, or a view of the raw RGB24 output (no copy)
    width: int
    height: int
    encoding: str
    batch_size: int
    timings_ms: dict[str, float]    # queue, decode, infer, encode, total
    backend: str                    # what ran this frame
    model: str
    version: str


@dataclass
class FrameTrace:
    """One frame's bookkeeping: when it arrived (``time.perf_counter``) and the backend that
    ran it, set when the frame leases a model ("" before)."""

    received: float = field(default_factory=time.perf_counter)
    backend: str = ""


class Sessions:
    """Opens :class:`Session` s on the serving slot, with the style vectors, codec threads,
    metrics and the online quality sampler."""

    def __init__(self, config: ServerConfig, slot: ServingSlot, vectors: StyleVectors, codec_pool: CodecPool,
                 metrics: Metrics, quality: QualitySampler) -> None:
        self.config, self.slot, self.vectors, self.codecs = config, slot, vectors, codec_pool
        self.metrics, self.quality = metrics, quality

    def assign(self, model: str = "", version: str = "", *, stream: bool = False) -> Assignment:
        """The version a new stream (``stream``) or call runs on: ``version`` (pinned) or one the
        traffic split draws; ``model``, if named, must be the served one.  Release it when the
        stream or call ends.  Raises :class:`InvalidArgument` (another model, a version not
        loaded) or ``FailedPrecondition`` (a version being unloaded)."""
        self.slot.check_model(model)
        return self.slot.assign(version, stream=stream)

    async def open(self, style: StyleSpec, output: OutputSpec, process_max_side: int, model: str,
                   assignment: Assignment) -> Session:
        """Check the options and resolve the style's vector for the assigned version (``model``,
        if named, must be the served one); raises :class:`InvalidArgument` (bad options, weights,
        another model) or :class:`NotFound` (unknown style)."""
        self.slot.check_model(model)
        if not 0.0 <= style.strength <= 1.0:
            raise InvalidArgument(f"strength must be within [0, 1], got {style.strength}")
        if output.encoding not in ENCODINGS:
            raise InvalidArgument(f"unknown output encoding {output.encoding!r}")
        if not 0 <= output.quality <= 100:
            raise InvalidArgument(f"quality must be 1..100 (0 = default), got {output.quality}")
        side = process_max_side or self.config.process_max_side
        if side > self.config.max_process_side:
            raise InvalidArgument(f"process_max_side {side} is above this server's ceiling of "
                                  f"{self.config.max_process_side} (max_process_side); ask for less")
        model = self.slot.serving(assignment.key)
        vector = await self.vectors.blend(style.weights, model)
        return Session(self, style, output, side, {model.key: vector}, assignment)


class Session:
    """A resolved style plus output options for one stream (or one image).

    Each frame runs on the artifact serving the assigned version when it reaches inference (a
    better artifact of that version swapped in is used at once; a version replaced by a plain
    load hands its frames to the new default), with that model version's style vector
    (resolved once per version, so a swap mid-stream is seamless).
    The content vector (strength < 1) is computed from the first frame, refreshed every
    ``content_vector_refresh`` frames and on a version change, never per frame.
    """

    def __init__(self, sessions: Sessions, style: StyleSpec, output: OutputSpec, process_max_side: int,
                 vectors: dict[ModelKey, np.ndarray], assignment: Assignment) -> None:
        self._slot, self._vectors_of, self._codecs = sessions.slot, sessions.vectors, sessions.codecs
        self._metrics, self._quality = sessions.metrics, sessions.quality
        self.assignment = assignment
        self._max_pixels = sessions.config.max_pixels
        self._max_message_bytes = sessions.config.max_message_bytes
        self._content_refresh = sessions.config.content_vector_refresh
        self.style, self.strength = style, style.strength
        self.output, self.process_max_side = output, process_max_side
        self._vectors = vectors
        self._content: tuple[ModelKey, asyncio.Future] | None = None
        self._content_uses = 0

    def _decode(self, image: ImageInput) -> tuple[np.ndarray, tuple[int, int]]:
        """→ (the frame as uint8, scaled to ``process_max_side``; its original (width, height))."""
        rgb, size = codecs.decode(image.data, image.pixel_format, image.width, image.height,
                                  max_pixels=self._max_pixels, draft_side=self.process_max_side)
        return codecs.resize(rgb, codecs.fit_within(size, self.process_max_side)), size

    def _output_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """The (width, height) to answer a frame of ``size`` with; checked before any inference
        (a raw answer that cannot fit a message is refused here, not after the work)."""
        target = codecs.output_size(size, self.output.width, self.output.height)
        codecs.check_output(*target, self.output.encoding, max_pixels=self._max_pixels,
                            max_message_bytes=self._max_message_bytes)
        return target

    def _encode(self, out: np.ndarray, target: tuple[int, int]) -> bytes:
        return codecs.encode(codecs.resize(out, target), self.output.encoding, self.output.quality)

    @staticmethod
    def _raw_view(out: np.ndarray) -> memoryview:
        """The raw RGB24 answer as a view of the output array: it is copied once, into the
        serialized response."""
        return memoryview(np.ascontiguousarray(out)).cast("B")

    def _decode_inline(self, image: ImageInput) -> bool:
        """RGB24 that needs no scaling is a zero-copy view: no codec thread hop."""
        return image.pixel_format == "rgb24" and max(image.width, image.height) <= self.process_max_side

    def _encode_inline(self, out: np.ndarray, target: tuple[int, int]) -> bool:
        """Raw output that needs no scaling is a view of the array: no codec thread hop."""
        return self.output.encoding == "raw" and target == (out.shape[1], out.shape[0])

    async def _style_vector(self, model: LoadedModel) -> np.ndarray:
        if (vec := self._vectors.get(model.key)) is None:
            vec = self._vectors[model.key] = await self._vectors_of.blend(self.style.weights, model)
        return vec

    def _content_vector(self, small: np.ndarray, model: LoadedModel) -> asyncio.Future:
        key, fut = self._content or (None, None)
        stale = (fut is None or key != model.key or self._content_uses >= self._content_refresh
                 or (fut.done() and (fut.cancelled() or fut.exception() is not None)))
        if stale:
            normalised = style_image_uint8(Image.fromarray(small))
            fut = asyncio.ensure_future(self._slot.predict(normalised, model))
            self._content = (model.key, fut)
            self._content_uses = 0
        self._content_uses += 1
        return fut

    async def process(self, image: ImageInput, trace: FrameTrace | None = None) -> FrameResult:
        """Stylize one frame; ``trace.received`` starts the total timing and ``trace.backend``
        is set to the backend the frame runs on.  Raises :class:`InvalidArgument` for a bad
        image, the backend's error when inference fails."""
        trace = trace or FrameTrace()
        t0 = time.perf_counter()
        if self._decode_inline(image):
            small, size = self._decode(image)
        else:
            small, size = await self._codecs.run(self._decode, image)
        w, h = target = self._output_size(size)
        t1 = time.perf_counter()
        model = self._slot.serving(self.assignment.key)
        with model.lease():
            trace.backend = model.backend.name
            vector = style_vector = await self._style_vector(model)
            if self.strength < 1.0:
                v_content = await asyncio.shield(self._content_vector(small, model))
                vector = (self.strength * vector + (1.0 - self.strength) * v_content).astype(np.float32)
            res = await self._slot.infer(model, small, vector)
            self._metrics.version_frame(*model.key)
            self._quality.offer(model, small, res.image, style_vector)
        t2 = time.perf_counter()
        if self._encode_inline(res.image, target):
            data = self._raw_view(res.image)
        else:
            data = await self._codecs.run(self._encode, res.image, target)
        t3 = time.perf_counter()
        received = trace.received
        timings = {"queue": res.queue_s * 1e3 + (t0 - received) * 1e3, "decode": (t1 - t0) * 1e3,
                   "infer": res.infer_s * 1e3, "encode": (t3 - t2) * 1e3, "total": (t3 - received) * 1e3}
        return FrameResult(data, w, h, self.output.encoding, res.batch_size, timings,
                           model.backend.name, *model.key)
