"""The serving slot: the loaded versions of the served model, which one new traffic gets, and
the retiring artifacts finishing their frames.

Several versions of one model can be loaded at once (A/B tests): each new stream or unary call
is assigned one by the :class:`~stylecast.server.traffic.TrafficSplit` (or pins one) and keeps
it; each frame leases that version's serving artifact when it reaches inference.
:meth:`ServingSlot.activate` swaps a newly loaded artifact in atomically (a better format of a
loaded version, a version loaded alongside, or a new version replacing them all); replaced
artifacts are retired in the background once the frames leased on them are done, and a version
being unloaded (:meth:`ServingSlot.drain`) first waits for the streams and calls assigned to it.
The slot owns the inference threads every model runs on.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter, OrderedDict
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from stylecast.model.preprocess import to_float
from stylecast.server.batcher import BatchResult
from stylecast.server.config import ServerConfig
from stylecast.server.errors import FailedPrecondition, InvalidArgument, Unavailable
from stylecast.server.loaded_model import LoadedModel
from stylecast.server.metrics import Metrics
from stylecast.server.registry import AVAILABLE, ModelRegistry
from stylecast.server.traffic import TrafficSplit

log = logging.getLogger(__name__)
RECENT_SHAPES = 4  # frame sizes a new artifact is warmed up with before its swap
ModelKey = tuple[str, str]  # (model name, version)


class Assignment:
    """The version a stream (for its whole life) or a unary call runs on; :meth:`release` when
    it ends (a version being unloaded closes once none is left)."""

    def __init__(self, slot: ServingSlot, key: ModelKey, stream: bool) -> None:
        self.slot, self.key, self.stream = slot, key, stream
        self._released = False

    @property
    def version(self) -> str:
        return self.key[1]

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.slot._released(self)


class ServingSlot:
    """The loaded versions (``current`` is the default one: None until the loader activates the
    first), the traffic split between them, the retiring artifacts, the inference threads
    (``inference``) and the recent frame sizes."""

    def __init__(self, config: ServerConfig, metrics: Metrics, registry: ModelRegistry) -> None:
        self._metrics, self._registry = metrics, registry
        self.inference = ThreadPoolExecutor(config.workers or os.cpu_count() or 1,  # the most layout() picks
                                            thread_name_prefix="stylecast-infer")
        self.split = TrafficSplit()
        self._versions: dict[ModelKey, LoadedModel] = {}   # the serving artifact of each loaded version
        self._default: ModelKey | None = None
        self._draining: dict[ModelKey, asyncio.Event] = {}  # set when no assignment is left
        self._open: Counter[ModelKey] = Counter()      # streams and calls assigned to a version
        self._streams: Counter[ModelKey] = Counter()   # of which streams
        self._retiring: set[LoadedModel] = set()
        self._retire_tasks: set[asyncio.Task] = set()
        self._shapes: OrderedDict[tuple[int, int], None] = OrderedDict()
        metrics.queued_frames.set_function(lambda: self.pending_frames)  # read at scrape: no per-frame work

    @property
    def current(self) -> LoadedModel | None:
        """The default version's serving artifact: what new traffic gets without a split, what
        registers styles; None before the first load."""
        return self._versions.get(self._default) if self._default is not None else None

    @property
    def model(self) -> LoadedModel:
        """The default serving model; raises :class:`Unavailable` before the first one is loaded."""
        if (model := self.current) is None:
            raise Unavailable("no model loaded yet; retry shortly", retry_after_s=1.0)
        return model

    def check_model(self, requested: str) -> None:
        """A request naming a model ("" = any) must name the served one; raises :class:`InvalidArgument`."""
        served = self.model.package.name
        if requested and requested != served:
            raise InvalidArgument(f"model {requested!r} is not served here (this server serves {served!r})")

    def version(self, name: str, version: str) -> LoadedModel | None:
        """The serving artifact of a loaded version, or None."""
        return self._versions.get((name, version))

    def loaded(self) -> list[LoadedModel]:
        """The serving artifact of every loaded version, by version."""
        return [self._versions[k] for k in sorted(self._versions)]

    def draining(self, key: ModelKey) -> bool:
        return key in self._draining

    def open_streams(self, key: ModelKey) -> int:
        """Streams assigned to a version now."""
        return self._streams[key]

    def serving(self, key: ModelKey) -> LoadedModel:
        """What a frame assigned to ``key`` runs on: that version's serving artifact, or the default
        one when the version was replaced by a plain load (a hot swap moves every stream)."""
        return self._versions.get(key) or self.model

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
        """Frames waiting for an inference batch, over all loaded models (also read by the
        metrics scrape's thread: copies of the collections, counters)."""
        return sum(m.pending for m in self._models())

    def _models(self) -> list[LoadedModel]:
        return list(self._versions.values()) + list(self._retiring)

    # ------------------------------------------------------------- traffic

    def assign(self, version: str = "", *, stream: bool = False) -> Assignment:
        """The version a new stream (``stream``) or call runs on: ``version`` if given (pinned),
        else one drawn by the traffic split.  Raises :class:`InvalidArgument` for a version that
        is not loaded, :class:`FailedPrecondition` for one being unloaded."""
        default = self.model
        name = default.package.name
        if version:
            key = (name, version)
            live = ", ".join(v for k, v in sorted(self._versions) if (k, v) not in self._draining)
            if key not in self._versions:
                raise InvalidArgument(f"version {version!r} of model {name} is not loaded here (loaded: {live}); "
                                      "pin one of those, or leave model_version empty for the traffic split")
            if key in self._draining:
                raise FailedPrecondition(f"version {version} of model {name} is being unloaded; pin another "
                                         f"version (taking new streams: {live}), or leave model_version empty")
        else:
            key = (name, self.split.choose(self._live_versions(), default.package.version))
        self._open[key] += 1
        if stream:
            self._streams[key] += 1
            self._metrics.version_stream_opened(*key, self._streams[key])
        return Assignment(self, key, stream)

    def _released(self, assignment: Assignment) -> None:
        key = assignment.key
        self._open[key] -= 1
        if assignment.stream:
            self._streams[key] -= 1
            if key in self._versions:
                self._metrics.version_stream_opened(*key, self._streams[key], new=False)
        if self._open[key] <= 0:
            del self._open[key]
            self._streams.pop(key, None)
            if key in self._draining:
                self._draining[key].set()

    def _live_versions(self) -> list[str]:
        return [v for (_, v) in self._versions if (self._default[0], v) not in self._draining]

    def set_split(self, weights: dict[str, int]) -> None:
        """New streams and calls follow ``weights`` (version → percent of loaded versions, checked
        by the caller); open streams keep their versions."""
        self.split.weights = dict(weights)
        self._publish_split()

    def percent(self, key: ModelKey) -> int:
        """The share of new traffic a loaded version gets now (0 while draining)."""
        if key in self._draining or self._default is None:
            return 0
        return self.split.percent(key[1], self._live_versions(), self._default[1])

    def _publish_split(self) -> None:
        for key in self._versions:
            self._metrics.version_weight(*key, self.percent(key))

    # ------------------------------------------------------------------ frames

    async def infer(self, model: LoadedModel, content: np.ndarray, vector: np.ndarray) -> BatchResult:
        """Stylize one H×W×3 uint8 frame with one D float32 vector on ``model`` (the caller holds
        its lease), batched with same-size frames for that artifact."""
        shape = content.shape[:2]
        self._shapes[shape] = None
        self._shapes.move_to_end(shape)
        while len(self._shapes) > RECENT_SHAPES:
            self._shapes.popitem(last=False)
        return await model.batcher.submit((*model.key, model.format, *shape), content, vector)

    async def predict(self, style_uint8: np.ndarray, model: LoadedModel | None = None) -> np.ndarray:
        """One 256×256×3 uint8 normalised style image → its D float32 vector, by ``model``
        (the default serving one by default)."""
        model = model or self.model
        with model.lease():
            return (await model.predict(to_float(style_uint8[None])))[0]

    # --------------------------------------------------------------- swapping

    def activate(self, model: LoadedModel, alongside: bool = False) -> None:
        """Swap ``model`` in: a better artifact of a loaded version replaces that version's (frames
        leased on the old one finish there); a new version is added next to the loaded ones
        (``alongside``, same model name: it takes traffic once a split gives it weight) or
        replaces them all and becomes the default (their streams move to it)."""
        key, m = model.key, self._metrics
        old = self._versions.get(key)
        self._versions[key] = model
        if old is not None:
            m.model_swapped(old.labels, model.labels, model.load_seconds, model.backend.memory_bytes)
            self._registry.swapped(model.package)
            self._registry.set(old.package, old.format, state=AVAILABLE)
            self._retire(old)
            return
        m.version_loaded(*key)
        if self._default is None or (alongside and key[0] == self._default[0]):
            self._default = self._default or key
            m.model_loaded(*model.labels, model.load_seconds, model.backend.memory_bytes)
            self._publish_split()
            return
        replaced, self._default = self._replaced_by(key), key
        self.split.weights = {}
        for i, previous in enumerate(replaced):
            del self._versions[previous.key]
            if (drained := self._draining.pop(previous.key, None)) is not None:
                drained.set()  # its drain task has nothing left to do
            if i == 0:  # the former default: a swap
                m.model_swapped(previous.labels, model.labels, model.load_seconds, model.backend.memory_bytes)
                self._registry.swapped(model.package)
            else:
                m.model_unloaded(*previous.labels)
            self._registry.set(previous.package, previous.format, state=AVAILABLE)
            self._retire(previous, version_gone=True)
        self._publish_split()

    def _replaced_by(self, new: ModelKey) -> list[LoadedModel]:
        """Every loaded version but ``new``, the default first."""
        others = [mdl for k, mdl in sorted(self._versions.items()) if k != new and k != self._default]
        return ([self._versions[self._default]] if self._default in self._versions else []) + others

    def drain(self, key: ModelKey) -> int:
        """Unload a loaded version once its streams and calls have ended: from now on it takes no
        new ones (the split's other versions share its weight; the default moves to the heaviest
        other version).  Raises :class:`FailedPrecondition` when it is the only version loaded.
        → the streams still open on it."""
        if key not in self._versions:
            raise FailedPrecondition(f"model {key[0]}:{key[1]} is not loaded")
        others = [k for k in self._versions if k != key and k not in self._draining]
        if not others:
            raise FailedPrecondition(f"model {key[0]}:{key[1]} is serving, the only version loaded; load "
                                     "another version first")
        if key in self._draining:
            return self._streams[key]
        self.split.weights.pop(key[1], None)
        if key == self._default:
            self._default = max(others, key=lambda k: (self.split.weights.get(k[1], 0), k))
        done = self._draining[key] = asyncio.Event()
        if not self._open[key]:
            done.set()
        self._publish_split()
        task = asyncio.create_task(self._drain(key, done), name="stylecast-drain")
        self._retire_tasks.add(task)
        task.add_done_callback(self._retire_tasks.discard)
        return self._streams[key]

    async def _drain(self, key: ModelKey, done: asyncio.Event) -> None:
        await done.wait()
        if self._draining.pop(key, None) is None or (model := self._versions.pop(key, None)) is None:
            return  # replaced meanwhile
        self._metrics.model_unloaded(*model.labels)
        self._registry.set(model.package, model.format, state=AVAILABLE)
        log.info("version %s drained", model.package.key)
        self._retiring.add(model)
        await self._retire_now(model, version_gone=True)

    def _retire(self, model: LoadedModel, version_gone: bool = False) -> None:
        self._retiring.add(model)
        task = asyncio.create_task(self._retire_now(model, version_gone), name="stylecast-retire")
        self._retire_tasks.add(task)
        task.add_done_callback(self._retire_tasks.discard)

    async def _retire_now(self, model: LoadedModel, version_gone: bool) -> None:
        """Close a retiring artifact once the frames leased on it are done (``version_gone``: its
        version's metric series go too)."""
        try:
            await model.close(drain=True)
        finally:
            self._retiring.discard(model)
            if version_gone and model.key not in self._versions:
                self._metrics.version_unloaded(*model.key)
        log.info("retired %s %s:%s", model.package.key, model.backend.name, model.format)

    async def close(self) -> None:
        """Close every model now (frames still leased fail) and the inference threads."""
        models = self._models()
        for model in self._versions.values():
            self._metrics.model_unloaded(*model.labels)
        for task in list(self._retire_tasks):
            task.cancel()
        await asyncio.gather(*self._retire_tasks, return_exceptions=True)
        for model in models:
            await model.close(drain=False)
        self._versions.clear()
        self._default = None
        self.inference.shutdown(wait=True)
