"""Online quality: scores for a sample of answered frames, computed off the serving path.

One answered frame in ``quality_sample_every`` (streams and StylizeImage together) is offered
to :class:`QualitySampler`: the event loop only counts and, for a picked frame, puts references
to its arrays into a queue of :data:`QUEUE` samples, or drops the sample when the queue is full
(the scorer is busy), so serving never waits for scoring.  One background thread at a lower CPU
priority (``nice`` +10: it runs on spare CPU) scores each sample with the measures of
:mod:`stylecast.model.quality`:

- **style score**: the version's own style predictor applied to the output (centre-cropped to
  256², as styles are), centred cosine against the requested style vector (the blend at full
  strength).  The centre is the mean of the version's vectors of every style in the library,
  refreshed every :data:`MEAN_TTL_S`; with fewer than :data:`MIN_STYLES` styles there is no
  meaningful centre and only the content score is recorded.
- **content kept**: SSIM of the greyscale output and input, both scaled so their longer side
  is :data:`SSIM_SIDE` px.

Scores go to the ``stylecast_quality_*`` histograms by model version.  The predictor runs in
an interpreter of the scorer's own (LiteRT, one thread, from the package's TFLite artifact),
never on the serving workers; a package without a TFLite artifact falls back to its serving
backend's ``predict_style``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np
from PIL import Image

from stylecast.backends.base import Backend, BackendOptions, backend_formats, create_backend, is_installed
from stylecast.model.preprocess import style_image, to_float
from stylecast.model.quality import centred_cos, gray_ssim
from stylecast.server.loaded_model import LoadedModel
from stylecast.server.metrics import Metrics
from stylecast.server.serving import ModelKey, ServingSlot
from stylecast.server.style_store import StyleStore

log = logging.getLogger(__name__)
QUEUE = 4            # samples waiting for the scorer; more are dropped
SSIM_SIDE = 128      # longer side of the images SSIM compares (px)
MIN_STYLES = 4       # library styles needed for a style-score centre
MEAN_TTL_S = 60.0    # how long a version's mean style vector is reused
NICE = 10            # the scorer thread's priority, relative to the server's


def _lower_priority() -> None:
    """Run the calling thread ``NICE`` steps below the process (Linux: per thread)."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + NICE))
    except (AttributeError, OSError):  # not Linux: the thread keeps the process's priority
        pass


def _small(image: np.ndarray, side: int = SSIM_SIDE) -> np.ndarray:
    """H×W×3 uint8 → float [0, 1], bilinear-scaled so its longer side is ``side``."""
    h, w = image.shape[:2]
    size = (max(1, round(w * side / max(h, w))), max(1, round(h * side / max(h, w))))
    return to_float(np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR)))


def ssim_fits(height: int, width: int) -> bool:
    """Whether a ``height``×``width`` frame scaled to :data:`SSIM_SIDE` px keeps at least 11 px
    on its shorter side (the SSIM window)."""
    return round(min(height, width) * SSIM_SIDE / max(height, width, 1)) >= 11


def content_ssim(content: np.ndarray, output: np.ndarray) -> float:
    """Greyscale SSIM of two H×W×3 uint8 images at :data:`SSIM_SIDE` px; raises ValueError
    when the scaled images are under 11 px on a side (the SSIM window: see :func:`ssim_fits`)."""
    if not ssim_fits(*content.shape[:2]):
        raise ValueError(f"a {content.shape[1]}×{content.shape[0]} frame is too narrow for SSIM")
    return gray_ssim(_small(content), _small(output))


def style_score(predict, output: np.ndarray, requested: np.ndarray, mean: np.ndarray) -> float:
    """Centred cosine of ``predict``'s vector of the H×W×3 uint8 ``output`` (centre-cropped,
    256²) and the ``requested`` D vector, centred by ``mean``; in [−1, 1]."""
    vector = np.asarray(predict(style_image(Image.fromarray(output))[None]), np.float32).reshape(-1)
    return float(centred_cos(vector, np.asarray(requested, np.float32), mean))


@dataclass
class _Sample:
    model: LoadedModel
    content: np.ndarray   # H×W×3 uint8, what went into the model
    output: np.ndarray    # H×W×3 uint8, what came out
    vector: np.ndarray    # D float32, the requested style (full strength)
    lease: ExitStack      # holds the model open until scored


class QualitySampler:
    """Scores one answered frame in ``every`` (0 = off) in the background; event loop only,
    except the scoring itself."""

    def __init__(self, every: int, metrics: Metrics, slot: ServingSlot, store: StyleStore) -> None:
        self.every, self._metrics, self._slot, self._store = every, metrics, slot, store
        self._seen = 0
        self._queue: asyncio.Queue[_Sample] = asyncio.Queue(QUEUE)
        self._task: asyncio.Task | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="stylecast-quality", initializer=_lower_priority)
        self._predictors: dict[ModelKey, Backend] = {}   # scorer thread only
        self._means: dict[ModelKey, tuple[float, np.ndarray | None]] = {}

    def offer(self, model: LoadedModel, content: np.ndarray, output: np.ndarray, vector: np.ndarray) -> None:
        """An answered frame: queue it for scoring if it is the ``every``-th (and the queue has
        room; else it is counted as dropped; a frame too thin for SSIM, e.g. 400×1, is counted as
        skipped).  Never blocks."""
        if not self.every:
            return
        self._seen += 1
        if self._seen % self.every:
            return
        if not ssim_fits(*content.shape[:2]):
            self._metrics.quality_sample(*model.key, "skipped")
            return
        if self._queue.full():
            self._metrics.quality_sample(*model.key, "dropped")
            return
        lease = ExitStack()
        lease.enter_context(model.lease())
        self._queue.put_nowait(_Sample(model, content, output, vector, lease))
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="stylecast-quality")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            sample = await self._queue.get()
            key = sample.model.key
            try:
                mean = await self._mean(key)
                style, ssim = await loop.run_in_executor(self._thread, self._score, sample, mean)
                self._metrics.quality_scored(*key, style, ssim)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("online quality: scoring a frame of %s:%s failed", *key, exc_info=True)
                self._metrics.quality_sample(*key, "failed")
            finally:
                sample.lease.close()
                sample = None
            loaded = {m.key for m in self._slot.loaded()}
            if set(self._predictors) - loaded:
                await loop.run_in_executor(self._thread, self._close_predictors, loaded)

    async def _mean(self, key: ModelKey) -> np.ndarray | None:
        """The mean of the version's vectors of the library's styles (None below MIN_STYLES)."""
        now = time.monotonic()
        expires, mean = self._means.get(key, (0.0, None))
        if now >= expires:
            ids, matrix = await self._store.vectors(*key)
            mean = np.asarray(matrix, np.float32).mean(0) if len(ids) >= MIN_STYLES else None
            self._means[key] = (now + MEAN_TTL_S, mean)
        return mean

    # ------------------------------------------------------------ scorer thread

    def _score(self, sample: _Sample, mean: np.ndarray | None) -> tuple[float | None, float]:
        ssim = content_ssim(sample.content, sample.output)
        if mean is None:
            return None, ssim
        return style_score(self._predictor(sample.model).predict_style, sample.output, sample.vector, mean), ssim

    def _predictor(self, model: LoadedModel) -> Backend:
        """The version's style predictor in an interpreter of the scorer's own (LiteRT), or the
        serving backend when the package has no TFLite artifact or LiteRT is not installed."""
        if (predictor := self._predictors.get(model.key)) is not None:
            return predictor
        litert = backend_formats("litert")
        formats = [model.format] if model.format in litert else [f for f in litert if f in model.package.artifacts]
        if not formats or not is_installed("litert"):
            return model.backend
        predictor = create_backend("litert")
        predictor.load(model.package, BackendOptions(format=formats[0], threads=1, workers=1, shape_cache=1, idle_s=0))
        self._predictors[model.key] = predictor
        return predictor

    def _close_predictors(self, keep: set[ModelKey]) -> None:
        for key in [k for k in self._predictors if k not in keep]:
            self._predictors.pop(key).close()

    async def close(self) -> None:
        """Stop scoring (queued samples are released unscored) and close the predictors."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        while not self._queue.empty():
            self._queue.get_nowait().lease.close()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._close_predictors, set())
        await loop.run_in_executor(None, self._thread.shutdown, True)
