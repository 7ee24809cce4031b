"""Every Prometheus metric stylecast exports, declared here and nowhere else.

One :class:`Metrics` per server instance, each with its own ``CollectorRegistry``
(plus the standard process and platform collectors), so several servers can run
in one process.  :func:`serve_metrics` exposes a registry on its own HTTP port,
served from a thread of its own, never from the gRPC event loop.

Labels are bounded: backend, stage, outcome, method, code, model, token (a name from the
tokens file, or ``anonymous``; never the token) and a version label only for loaded versions
(``stylecast_model_info``, the per-version traffic and quality series), whose series are removed
when the version is unloaded.
"""

from __future__ import annotations

import threading
from collections import Counter as Tally
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram, PlatformCollector,
                               ProcessCollector, start_http_server)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# Around the 33 ms frame budget, 1 ms … 1 s.
FRAME_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.033, 0.04, 0.05, 0.066,
                 0.1, 0.15, 0.25, 0.5, 1.0)
RPC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
STREAM_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0)
LOAD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
# Online quality (server/online_quality.py), observed clamped to [0, 1]: a histogram with a negative
# bucket has no _sum (negative observations would break its counter-reset detection).
QUALITY_BUCKETS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0)
# What became of a frame picked for online quality: scored, dropped (the scorer was busy), skipped (too
# thin for SSIM, e.g. 400×1), failed.
QUALITY_OUTCOMES = ("scored", "dropped", "skipped", "failed")
STAGES = ("queue", "decode", "infer", "encode", "total")
# How a stream frame the server read ended: answered with a stylized frame, a FrameError or a
# FrameDropped, or never answered because the stream ended first (the client cancelled, its deadline passed).
OUTCOMES = ("ok", "error", "dropped", "cancelled")
# Stage timings of stylized frames wait in a queue (one append per frame on the event loop) and are
# observed into the histogram when it is collected, or by the loop once this many wait.
FOLD_FRAMES = 256


class _BackendMemory(Collector):
    """Per-backend memory, read from ``Backend.memory_bytes()`` at scrape time."""

    def __init__(self) -> None:
        self._sources: dict[tuple[str, ...], Callable[[], Mapping[str, int]]] = {}
        self._lock = threading.Lock()

    def set(self, key: tuple[str, ...], read: Callable[[], Mapping[str, int]] | None) -> None:
        """``key``: (backend, model, version); a backend's figures sum over its loaded versions."""
        with self._lock:
            if read is None:
                self._sources.pop(key, None)
            else:
                self._sources[key] = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        host = GaugeMetricFamily(
            "stylecast_backend_host_memory_estimate_bytes",
            "Host memory a backend took: RSS growth over its load and warmup (an estimate).", labels=["backend"])
        device = GaugeMetricFamily(
            "stylecast_backend_device_memory_bytes",
            "Accelerator memory a backend holds, as its runtime reports it (0 on CPU).", labels=["backend"])
        with self._lock:
            sources = list(self._sources.items())
        totals: dict[str, list[float]] = {}
        for (backend, *_), read in sources:
            try:
                mem = read()
            except Exception:  # a backend closing under a scrape: skip it this time
                continue
            total = totals.setdefault(backend, [0.0, 0.0])
            total[0] += float(mem.get("host", 0))
            total[1] += float(mem.get("device", 0))
        for backend, (host_bytes, device_bytes) in totals.items():
            host.add_metric([backend], host_bytes)
            device.add_metric([backend], device_bytes)
        yield host
        yield device

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())


class _Folded(Collector):
    """Collects ``metric`` (kept out of the registry itself) after ``fold()`` has observed what
    waits for it."""

    def __init__(self, metric: Histogram, fold: Callable[[], None]) -> None:
        self._metric, self._fold = metric, fold

    def collect(self) -> Iterator:
        self._fold()
        return self._metric.collect()

    def describe(self) -> Iterator:
        return self._metric.describe()


class Metrics:
    """The metrics of one server instance, in ``self.registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        r = self.registry
        self.frame_latency = Histogram(
            "stylecast_frame_latency_seconds", "Per-frame time in each pipeline stage (total = receipt to encoded).",
            ["stage", "backend"], buckets=FRAME_BUCKETS, registry=None)
        self._timings: deque[tuple[str, Mapping[str, float]]] = deque()  # frame_done's, not yet observed
        r.register(_Folded(self.frame_latency, self._fold_timings))
        self.frames = Counter("stylecast_frames_total",
                              "Stream frames read, by outcome: ok, error and dropped once their answer is written; "
                              "cancelled when the stream ended before it was.", ["outcome", "backend"], registry=r)
        self.rpc_latency = Histogram(
            "stylecast_rpc_duration_seconds",
            "Duration of RPCs with a unary response, by method, status code and token name.",
            ["method", "code", "token"], buckets=RPC_BUCKETS, registry=r)
        self.stream_duration = Histogram(
            "stylecast_stream_duration_seconds",
            "Duration of response-streaming RPCs, by method, status code and token name.",
            ["method", "code", "token"], buckets=STREAM_BUCKETS, registry=r)
        self.active_streams = Gauge("stylecast_active_streams", "Response-streaming RPCs now open.",
                                    ["method"], registry=r)
        self.stream_buffered_bytes = Gauge(
            "stylecast_stream_buffered_bytes",
            "Bytes of frames Stylize streams hold: requests read and answers not yet sent (frame_memory_bytes "
            "bounds it).", registry=r)
        self.queued_frames = Gauge("stylecast_queued_frames",
                                   "Frames waiting for an inference batch (read when scraped).", registry=r)
        self.batch_size = Histogram("stylecast_batch_size_frames", "Frames per inference batch.",
                                    ["backend"], buckets=BATCH_BUCKETS, registry=r)
        self.styles = Gauge("stylecast_styles", "Styles in the style library.", registry=r)
        self.model_load_duration = Histogram(
            "stylecast_model_load_duration_seconds", "Time to verify and load a model into a backend.",
            ["model", "backend"], buckets=LOAD_BUCKETS, registry=r)
        self.model_load_failures = Counter("stylecast_model_load_failures_total", "Model loads that failed.",
                                           ["model", "backend"], registry=r)
        self.model_load_progress = Gauge("stylecast_model_load_progress_ratio",
                                         "Share of a loading model's bytes verified (1 when loaded).",
                                         ["model", "backend"], registry=r)
        self.model_ready = Gauge("stylecast_model_ready", "1 while the model is loaded and serving.",
                                 ["model", "backend"], registry=r)
        self.model_swaps = Counter("stylecast_model_swaps_total",
                                   "Artifacts swapped in while serving (a better format or a new version).",
                                   ["model", "backend"], registry=r)
        self.model_info = Gauge("stylecast_model_info", "The loaded model version (series removed on unload).",
                                ["model", "version", "backend", "format"], registry=r)
        self.version_frames = Counter(
            "stylecast_version_frames_total",
            "Frames stylized (streams and StylizeImage) by each loaded model version.",
            ["model", "version"], registry=r)
        self.version_streams = Counter(
            "stylecast_version_streams_total", "Stylize streams assigned to each loaded model version.",
            ["model", "version"], registry=r)
        self.version_open_streams = Gauge(
            "stylecast_version_open_streams", "Stylize streams open on each loaded model version.",
            ["model", "version"], registry=r)
        self.version_weight_percent = Gauge(
            "stylecast_version_traffic_percent",
            "Share of new streams and calls each loaded version gets (traffic split).",
            ["model", "version"], registry=r)
        self.quality_style = Histogram(
            "stylecast_quality_style_score",
            "Online quality, sampled frames: centred cosine of the model's style vector of the output and the "
            "requested style vector, negatives as 0 (1 = the output carries exactly the requested style).",
            ["model", "version"], buckets=QUALITY_BUCKETS, registry=r)
        self.quality_content = Histogram(
            "stylecast_quality_content_ssim",
            "Online quality, sampled frames: SSIM of the greyscale output and input at 128 px, negatives as 0 "
            "(1 = content fully kept).",
            ["model", "version"], buckets=QUALITY_BUCKETS, registry=r)
        self.quality_samples = Counter(
            "stylecast_quality_samples_total",
            "Frames picked for online quality: scored, dropped (the scorer was busy), skipped (too thin "
            "for SSIM, e.g. 400x1) or failed.",
            ["model", "version", "outcome"], registry=r)
        self._versioned = (self.version_frames, self.version_streams, self.version_open_streams,
                           self.version_weight_percent, self.quality_style, self.quality_content)
        self._memory = _BackendMemory()
        r.register(self._memory)
        self._frame_children: dict[str, tuple] = {}
        self._version_frame_children: dict[tuple[str, str], object] = {}
        self._ready: Tally[tuple[str, str]] = Tally()   # loaded versions per (model, backend)

    # --------------------------------------------------------------- frames

    def _children(self, backend: str) -> tuple:
        """Pre-bound label children of one backend (a dict hit per frame, not a labels() call)."""
        if (kids := self._frame_children.get(backend)) is None:
            kids = (tuple(self.frame_latency.labels(s, backend) for s in STAGES),
                    {o: self.frames.labels(o, backend) for o in OUTCOMES})
            self._frame_children[backend] = kids
        return kids

    def frame_done(self, backend: str, timings_ms: Mapping[str, float]) -> None:
        """A stylized frame's stage timings (milliseconds, keys as :data:`STAGES`): queued, and
        observed when the histogram is next collected (or here, once :data:`FOLD_FRAMES` wait)."""
        self._timings.append((backend, timings_ms))
        if len(self._timings) >= FOLD_FRAMES:
            self._fold_timings()

    def _fold_timings(self) -> None:
        """Observe every queued frame's timings; runs on the event loop or on the scraping thread
        (each queued frame is taken once: deque.popleft is atomic)."""
        while True:
            try:
                backend, timings_ms = self._timings.popleft()
            except IndexError:
                return
            stages, _ = self._children(backend)
            for name, hist in zip(STAGES, stages):
                hist.observe(timings_ms[name] / 1000.0)

    def frame_answered(self, backend: str, outcome: str, frames: int = 1) -> None:
        """``frames`` stream frames ended with ``outcome`` (one of :data:`OUTCOMES`)."""
        self._children(backend)[1][outcome].inc(frames)

    def version_loaded(self, model: str, version: str) -> None:
        """Create a newly loaded version's series at 0, so rates and means exist from the start."""
        for metric in self._versioned:
            metric.labels(model, version)
        for outcome in QUALITY_OUTCOMES:
            self.quality_samples.labels(model, version, outcome)

    def version_frame(self, model: str, version: str) -> None:
        """A frame was stylized by ``model`` at ``version``."""
        if (child := self._version_frame_children.get((model, version))) is None:
            child = self._version_frame_children[(model, version)] = self.version_frames.labels(model, version)
        child.inc()

    def version_stream_opened(self, model: str, version: str, open_streams: int, new: bool = True) -> None:
        """``open_streams`` streams are now open on a version (``new``: one more was assigned to it)."""
        if new:
            self.version_streams.labels(model, version).inc()
        self.version_open_streams.labels(model, version).set(open_streams)

    def version_weight(self, model: str, version: str, percent: int) -> None:
        self.version_weight_percent.labels(model, version).set(percent)

    def quality_scored(self, model: str, version: str, style: float | None, ssim: float) -> None:
        """One sampled frame's scores in [-1, 1], recorded clamped to [0, 1] (``style`` None: no
        reference mean for it yet)."""
        if style is not None:
            self.quality_style.labels(model, version).observe(max(0.0, style))
        self.quality_content.labels(model, version).observe(max(0.0, ssim))
        self.quality_samples.labels(model, version, "scored").inc()

    def quality_sample(self, model: str, version: str, outcome: str) -> None:
        """A frame picked for scoring was ``dropped``, ``skipped`` or ``failed`` (:data:`QUALITY_OUTCOMES`)."""
        self.quality_samples.labels(model, version, outcome).inc()

    def version_unloaded(self, model: str, version: str) -> None:
        """Remove a version's series once it is no longer loaded (bounded labels)."""
        self._version_frame_children.pop((model, version), None)
        for metric in self._versioned:
            try:
                metric.remove(model, version)
            except KeyError:
                pass
        for outcome in QUALITY_OUTCOMES:
            try:
                self.quality_samples.remove(model, version, outcome)
            except KeyError:
                pass

    def counting_batches(self, backend: str, run_batch: Callable[[np.ndarray, np.ndarray], np.ndarray]):
        """Wrap a batch function so each call records its batch size."""
        hist = self.batch_size.labels(backend)

        def run(content: np.ndarray, styles: np.ndarray) -> np.ndarray:
            hist.observe(len(content))
            return run_batch(content, styles)

        return run

    # ---------------------------------------------------------------- models

    def model_loading(self, model: str, backend: str) -> Callable[[str, int, int], None]:
        """Mark a load as started; returns a ``progress(format, done, total)`` callback.

        Readiness is untouched: an artifact of the same model may be serving meanwhile."""
        progress = self.model_load_progress.labels(model, backend)
        progress.set(0)

        def report(_fmt: str, done: int, total: int) -> None:
            progress.set(done / total if total else 1.0)

        return report

    def model_loaded(self, model: str, version: str, backend: str, fmt: str, seconds: float,
                     memory: Callable[[], Mapping[str, int]]) -> None:
        self.model_load_duration.labels(model, backend).observe(seconds)
        self.model_load_progress.labels(model, backend).set(1)
        self._ready[(model, backend)] += 1
        self.model_ready.labels(model, backend).set(1)
        self.model_info.labels(model, version, backend, fmt).set(1)
        self._memory.set((backend, model, version), memory)

    def model_load_failed(self, model: str, backend: str) -> None:
        """A load failed; whatever was serving keeps serving (and stays ready)."""
        self.model_load_failures.labels(model, backend).inc()

    def model_swapped(self, old: tuple[str, str, str, str], new: tuple[str, str, str, str], seconds: float,
                      memory: Callable[[], Mapping[str, int]]) -> None:
        """``new`` (model, version, backend, format) replaced ``old`` for new frames."""
        self.model_unloaded(*old)
        self.model_loaded(*new, seconds, memory)
        self.model_swaps.labels(new[0], new[2]).inc()

    def model_unloaded(self, model: str, version: str, backend: str, fmt: str) -> None:
        """An artifact stopped serving; ``stylecast_model_ready`` stays 1 while another version of
        the model serves on that backend."""
        self._ready[(model, backend)] -= 1
        if self._ready[(model, backend)] <= 0:
            del self._ready[(model, backend)]
            self.model_ready.labels(model, backend).set(0)
            self.model_load_progress.labels(model, backend).set(0)
        try:
            self.model_info.remove(model, version, backend, fmt)
        except KeyError:
            pass
        self._memory.set((backend, model, version), None)


@dataclass
class MetricsEndpoint:
    """A running ``/metrics`` HTTP server (its own thread); :meth:`close` stops it."""

    port: int
    _httpd: object
    _thread: threading.Thread

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def serve_metrics(registry: CollectorRegistry, host: str, port: int, **tls: object) -> MetricsEndpoint:
    """Serve ``registry`` at ``http://host:port/metrics`` from a daemon thread; ``tls``: HTTPS
    arguments of ``prometheus_client.start_http_server`` (certfile, keyfile, client_cafile, ...)."""
    httpd, thread = start_http_server(port, addr=host.strip("[]") or "0.0.0.0", registry=registry, **tls)
    return MetricsEndpoint(httpd.server_port, httpd, thread)
