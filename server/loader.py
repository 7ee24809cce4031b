"""Progressive loading: a package's artifacts in load order, each verified chunk by chunk,
loaded, warmed up, given a vector for every stored style, then swapped in.

:meth:`Loader.load` returns once the first artifact that loads is serving; the rest
load in the background, one at a time on the loader's own thread (never the
inference threads), each swapped in as soon as it is ready.  A failure marks that
artifact FAILED with its reason and leaves whatever is serving in place.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor

from stylecast.backends.base import Backend, create_backend
from stylecast.backends.package import ModelPackage
from stylecast.server.config import ServerConfig
from stylecast.server.errors import FailedPrecondition, StylecastError
from stylecast.server.loaded_model import LoadedModel
from stylecast.server.metrics import Metrics
from stylecast.server.packages import layout
from stylecast.server.registry import ACTIVE, AVAILABLE, FAILED, LOADING, QUEUED, VERIFYING, WARMING, ModelRegistry
from stylecast.server.serving import ServingSlot

log = logging.getLogger(__name__)
Entry = tuple[str, str]  # (backend, format)
Prepare = Callable[[LoadedModel, Executor], Awaitable[None]]  # before a model serves (its style vectors)


class LoadFailed(FailedPrecondition):
    """An artifact failed verification, loading, warmup or style vectors."""


class Loader:
    """Loads artifacts into ``slot``; ``prepare(model, executor)`` runs before each is activated."""

    def __init__(self, config: ServerConfig, metrics: Metrics, registry: ModelRegistry, slot: ServingSlot,
                 prepare: Prepare) -> None:
        self._config, self._metrics, self._registry = config, metrics, registry
        self._slot, self._prepare = slot, prepare
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="stylecast-load")
        self._lock = asyncio.Lock()
        self._background: dict[tuple[str, str], asyncio.Task] = {}   # (name, version) -> its upgrades

    async def load(self, package: ModelPackage, order: Sequence[Entry], alongside: bool = False) -> LoadedModel:
        """Serve ``package``: the first entry of ``order`` that loads is active on return, replacing
        every loaded version, or next to them (``alongside``: for a traffic split).

        When an artifact of the same version is serving already, only entries after it
        in ``order`` are loaded.  Background loads of the versions it replaces (all of them unless
        ``alongside``; its own in any case) are stopped."""
        async with self._lock:
            await self.stop_background(None if not alongside else (package.name, package.version))
            current = self._slot.version(package.name, package.version)
            order = list(order)
            if current is not None:
                done = [i for i, (b, f) in enumerate(order) if (b, f) == (current.backend.name, current.format)]
                order = order[done[0] + 1:] if done else order
                if not order:
                    return current
            for backend, fmt in order:
                self._registry.set(package, fmt, state=QUEUED, backend=backend, error="", done_bytes=0)
            errors: list[str] = []
            while order:
                entry = order.pop(0)
                try:
                    model = await self._load_one(package, *entry, alongside=alongside)
                    break
                except asyncio.CancelledError:
                    self._reset(package, order)
                    raise
                except StylecastError as exc:
                    errors.append(str(exc))
            else:
                serving = "; the previous model keeps serving" if self._slot.current is not None else ""
                raise LoadFailed(f"model {package.key} was not loaded{serving}: " + "; ".join(errors))
            if order:
                self._background[model.key] = asyncio.create_task(self._upgrade(package, order),
                                                                  name=f"stylecast-load-{package.key}")
            return model

    async def _upgrade(self, package: ModelPackage, order: list[Entry]) -> None:
        try:
            while order:
                entry = order.pop(0)
                try:
                    await self._load_one(package, *entry, alongside=True)  # its version is loaded
                except StylecastError as exc:
                    log.warning("%s", exc)
        except asyncio.CancelledError:
            self._reset(package, order)
            raise

    def loading_version(self, name: str) -> str:
        """The (latest) version of model ``name`` loading in the background, or ""."""
        running = [v for (n, v), task in self._background.items() if n == name and not task.done()]
        return running[-1] if running else ""

    async def stop_background(self, key: tuple[str, str] | None = None) -> bool:
        """Stop the background upgrades of one version (``key``) or of all (an artifact mid-load
        is closed when its thread step ends); → whether one was running."""
        keys = [key] if key is not None else list(self._background)
        tasks = [t for k in keys if (t := self._background.pop(k, None)) is not None and not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return bool(tasks)

    async def close(self) -> None:
        await self.stop_background()
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)

    def _reset(self, package: ModelPackage, order: Sequence[Entry]) -> None:
        for _, fmt in order:
            self._registry.set(package, fmt, state=AVAILABLE, backend="", done_bytes=0)

    # ------------------------------------------------------------ one artifact

    async def _load_one(self, package: ModelPackage, backend_name: str, fmt: str,
                        alongside: bool = False) -> LoadedModel:
        config, metrics, registry = self._config, self._metrics, self._registry
        loop = asyncio.get_running_loop()
        report = metrics.model_loading(package.name, backend_name)
        shapes = tuple(dict.fromkeys((*config.warmup_shapes, *self._slot.recent_shapes)))

        def post(**changes) -> None:  # from the loader thread, in order
            loop.call_soon_threadsafe(lambda: registry.set(package, fmt, **changes))

        def progress(_fmt: str, done: int, total: int) -> None:
            report(_fmt, done, total)
            post(done_bytes=done)

        workers, threads = layout(config, backend_name)

        def work() -> tuple[Backend, float]:
            started = time.perf_counter()
            stage = "verification"
            post(state=VERIFYING, done_bytes=0)
            package.verify([fmt], progress)
            stage = "load"
            post(state=LOADING)
            try:
                backend = create_backend(backend_name)
            except Exception as exc:  # the backend's library is missing here
                raise _Stage(stage, exc) from exc
            try:
                backend.load(package, config.backend_options(fmt, threads, workers))
                stage = "warmup"
                post(state=WARMING)
                backend.warmup(shapes)
            except Exception as exc:
                backend.close()
                raise _Stage(stage, exc) from exc
            except BaseException:
                backend.close()
                raise
            return backend, time.perf_counter() - started

        future: Future = self._executor.submit(work)
        try:
            backend, seconds = await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.add_done_callback(_close_result)
            raise
        except Exception as exc:
            stage = exc if isinstance(exc, _Stage) else _Stage("verification", exc)  # verify raised it
            raise self._failed(package, backend_name, fmt, stage) from None
        model = LoadedModel(package, backend, fmt, config, self._slot.inference, metrics, workers, seconds)
        try:
            await self._prepare(model, self._executor)
        except asyncio.CancelledError:
            await model.close(drain=False)
            raise
        except Exception as exc:
            await model.close(drain=False)
            raise self._failed(package, backend_name, fmt, _Stage("style vectors", exc)) from None
        self._slot.activate(model, alongside)
        registry.set(package, fmt, state=ACTIVE, load_seconds=seconds, done_bytes=package.artifact(fmt).size)
        log.info("model %s %s:%s active (%.2f s)", package.key, backend_name, fmt, seconds)
        return model

    def _failed(self, package: ModelPackage, backend: str, fmt: str, stage: _Stage) -> LoadFailed:
        reason = f"{stage.stage} failed: {stage.cause}"
        self._metrics.model_load_failed(package.name, backend)
        self._registry.set(package, fmt, state=FAILED, error=reason)
        log.warning("model %s %s:%s %s", package.key, backend, fmt, reason)
        return LoadFailed(f"model {package.key} {backend}:{fmt}: {reason}")


class _Stage(Exception):
    def __init__(self, stage: str, cause: BaseException) -> None:
        super().__init__(stage, cause)
        self.stage, self.cause = stage, cause


def _close_result(future: Future) -> None:
    """A load finished after its caller gave up: close what it loaded."""
    if not future.cancelled() and future.exception() is None:
        future.result()[0].close()

