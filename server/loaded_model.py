"""One artifact of one model package, loaded and warmed up in a backend, with its own batcher.

Frames hold a lease on the model they run on.  When a better artifact is swapped
in, the old one is retired: frames already leased (queued or running) finish on
it, then its batcher and backend close.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import Executor
from contextlib import contextmanager

import numpy as np

from stylecast.backends.base import Backend
from stylecast.backends.package import ModelPackage
from stylecast.model.preprocess import to_float, to_uint8
from stylecast.server.batcher import Batcher
from stylecast.server.config import ServerConfig
from stylecast.server.metrics import Metrics


class LoadedModel:
    def __init__(self, package: ModelPackage, backend: Backend, fmt: str, config: ServerConfig,
                 inference: Executor, metrics: Metrics, workers: int, load_seconds: float = 0.0) -> None:
        self.package, self.backend, self.format = package, backend, fmt
        self.load_seconds = load_seconds
        self._inference = inference
        self.workers = workers  # frames that run at once (the backend's workers)
        self.batcher = Batcher(metrics.counting_batches(backend.name, self._stylize), inference,
                               workers=self.workers, max_batch=config.max_batch,
                               max_wait_s=config.max_wait_ms / 1000)
        self._leases = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def _stylize(self, content: np.ndarray, styles: np.ndarray) -> np.ndarray:
        """N×H×W×3 uint8 → uint8, converted on the inference thread (not the event loop)."""
        return to_uint8(self.backend.stylize(to_float(content), styles))

    @property
    def key(self) -> tuple[str, str]:
        """(model name, version): what style vectors are keyed by."""
        return self.package.name, self.package.version

    @property
    def labels(self) -> tuple[str, str, str, str]:
        """(model, version, backend, format), as the metrics hooks take them."""
        return self.package.name, self.package.version, self.backend.name, self.format

    @contextmanager
    def lease(self) -> Iterator[LoadedModel]:
        """Hold the model open while a frame uses it."""
        self._leases += 1
        self._idle.clear()
        try:
            yield self
        finally:
            self._leases -= 1
            if not self._leases:
                self._idle.set()

    async def predict(self, images: np.ndarray) -> np.ndarray:
        """N×256×256×3 float style images → N×D vectors, on the inference threads."""
        out = await asyncio.get_running_loop().run_in_executor(self._inference, self.backend.predict_style, images)
        return np.asarray(out, np.float32).reshape(len(images), -1)

    @property
    def pending(self) -> int:
        return self.batcher.pending

    async def close(self, drain: bool = True) -> None:
        """Close after the frames holding a lease are done (``drain``), or now."""
        if drain:
            await self._idle.wait()
        await self.batcher.close()
        await asyncio.get_running_loop().run_in_executor(self._inference, self.backend.close)
