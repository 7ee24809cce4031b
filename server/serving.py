"""The serving slot: which loaded model new frames run on, and the retiring ones finishing theirs.

A frame leases the model that is serving when it reaches inference.  :meth:`ServingSlot.activate`
swaps a newly loaded model in atomically; the old one is retired in the background once the
frames leased on it are done.  The slot owns the inference threads every model runs on.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from stylecast.model.preprocess import to_float
from stylecast.server.batcher import BatchResult
from stylecast.server.config import ServerConfig
from stylecast.server.errors import InvalidArgument, Unavailable
from stylecast.server.loaded_model import LoadedModel
from stylecast.server.metrics import Metrics
from stylecast.server.registry import AVAILABLE, ModelRegistry

log = logging.getLogger(__name__)
RECENT_SHAPES = 4  # frame sizes a new artifact is warmed up with before its swap
ModelKey = tuple[str, str]  # (model name, version)


class ServingSlot:
    """The current model (``current``; None until the loader activates the first), the retiring
    ones, the inference threads (``inference``) and the recent frame sizes."""

    def __init__(self, config: ServerConfig, metrics: Metrics, registry: ModelRegistry) -> None:
        self._metrics, self._registry = metrics, registry
        self.inference = ThreadPoolExecutor(config.workers or os.cpu_count() or 1,  # the most layout() picks
                                            thread_name_prefix="stylecast-infer")
        self.current: LoadedModel | None = None
        self._retiring: set[LoadedModel] = set()
        self._retire_tasks: set[asyncio.Task] = set()
        self._shapes: OrderedDict[tuple[int, int], None] = OrderedDict()
        self._version_retired: list[Callable[[ModelKey], None]] = []

    def on_version_retired(self, callback: Callable[[ModelKey], None]) -> None:
        """Call ``callback(key)`` when a swap retires the last serving artifact of a model version."""
        self._version_retired.append(callback)

    @property
    def model(self) -> LoadedModel:
        """The serving model; raises :class:`Unavailable` before the first one is loaded."""
        if self.current is None:
            raise Unavailable("no model loaded yet; retry shortly", retry_after_s=1.0)
        return self.current

    def check_model(self, requested: str) -> None:
        """A request naming a model ("" = any) must name the served one; raises :class:`InvalidArgument`."""
        served = self.model.package.name
        if requested and requested != served:
            raise InvalidArgument(f"model {requested!r} is not served here (this server serves {served!r})")

    @property
    def backend_name(self) -> str:
        """The backend new frames run on ("" before the first model is loaded)."""
        return self.current.backend.name if self.current is not None else ""

    @property
    def workers(self) -> int:
        """Frames the serving model runs at once."""
        return self.current.workers if self.current is not None else 1

    @property
    def recent_shapes(self) -> tuple[tuple[int, int], ...]:
        """Content sizes of recent frames: a new artifact is warmed up with them before its swap."""
        return tuple(self._shapes)

    @property
    def pending_frames(self) -> int:
        """Frames waiting for an inference batch, over all loaded models."""
        return sum(m.pending for m in self._models())

    def _models(self) -> list[LoadedModel]:
        return ([self.current] if self.current is not None else []) + list(self._retiring)

    # ------------------------------------------------------------------ frames

    async def infer(self, model: LoadedModel, content: np.ndarray, vector: np.ndarray) -> BatchResult:
        """Stylize one H×W×3 uint8 frame with one D float32 vector on ``model`` (the caller holds
        its lease), batched with same-size frames for that artifact."""
        shape = content.shape[:2]
        self._shapes[shape] = None
        self._shapes.move_to_end(shape)
        while len(self._shapes) > RECENT_SHAPES:
            self._shapes.popitem(last=False)
        self._metrics.queued_frames.set(self.pending_frames + 1)
        try:
            return await model.batcher.submit((*model.key, model.format, *shape), content, vector)
        finally:
            self._metrics.queued_frames.set(self.pending_frames)

    async def predict(self, style_uint8: np.ndarray, model: LoadedModel | None = None) -> np.ndarray:
        """One 256×256×3 uint8 normalised style image → its D float32 vector, by ``model``
        (the serving one by default)."""
        model = model or self.model
        with model.lease():
            return (await model.predict(to_float(style_uint8[None])))[0]

    # --------------------------------------------------------------- swapping

    def activate(self, model: LoadedModel) -> None:
        """Swap ``model`` in: new frames use it; frames leased on the old one finish there."""
        old, self.current = self.current, model
        if old is None:
            self._metrics.model_loaded(*model.labels, model.load_seconds, model.backend.memory_bytes)
            return
        self._metrics.model_swapped(old.labels, model.labels, model.load_seconds, model.backend.memory_bytes)
        self._registry.swapped(model.package)
        if old.key != model.key:
            for callback in self._version_retired:
                callback(old.key)
        self._registry.set(old.package, old.format, state=AVAILABLE)
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
        """Close every model now (frames still leased fail) and the inference threads."""
        models = self._models()
        if self.current is not None:
            self._metrics.model_unloaded(*self.current.labels)
        for task in list(self._retire_tasks):
            task.cancel()
        await asyncio.gather(*self._retire_tasks, return_exceptions=True)
        for model in models:
            await model.close(drain=False)
        self.current = None
        self.inference.shutdown(wait=True)
