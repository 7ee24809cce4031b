"""``make bench``: what recording metrics costs per frame, as a share of frame time at 384².

Per frame the server records five stage latencies (queued on the event loop, observed at
scrape time or every ``FOLD_FRAMES`` frames: timed here with that work included), one outcome,
one batch size and one frame of its model version (the queue depth is read at scrape: nothing per frame; see
``server/metrics.py``).  This times exactly those calls on one thread, times ``backend.stylize`` at 384² with the same package the server
would load, and reports the ratio (goal < 1 %).  It also times rendering the
``/metrics`` page, which happens on the metrics thread once per scrape.
"""

from __future__ import annotations

import argparse
import time
import timeit

import numpy as np
from prometheus_client import generate_latest

from stylecast.server.metrics import Metrics

TIMINGS_MS = {"queue": 0.4, "decode": 1.2, "infer": 28.0, "encode": 1.5, "total": 31.4}


def recording_cost_us(repeat: int = 5, number: int = 50_000) -> float:
    """Best-of-``repeat`` microseconds to record one frame's metrics."""
    metrics = Metrics()
    run_batch = metrics.counting_batches("litert", lambda content, styles: content)
    content, styles = np.zeros((1, 1, 1, 3), np.float32), np.zeros((1, 100), np.float32)

    def one_frame() -> None:
        run_batch(content, styles)
        metrics.frame_done("litert", TIMINGS_MS)
        metrics.frame_answered("litert", "ok")
        metrics.version_frame("m", "1")

    return min(timeit.repeat(one_frame, repeat=repeat, number=number)) / number * 1e6


def scrape_cost_ms(metrics: Metrics, repeat: int = 20) -> float:
    """Milliseconds to render the /metrics page of a registry with one backend's series filled."""
    return min(timeit.repeat(lambda: generate_latest(metrics.registry), repeat=repeat, number=1)) * 1e3


def frame_ms(models_dir: str, model: str, backend_name: str, fmt: str, threads: int, size: int,
             seconds: float) -> tuple[float, str]:
    """Mean ``backend.stylize`` milliseconds for one size×size frame, and what was measured."""
    from stylecast.backends.base import BackendOptions, create_backend
    from stylecast.server.config import ServerConfig
    from stylecast.server.packages import choose_backend, find_package

    package = find_package(models_dir, model)
    name, fmt = choose_backend(ServerConfig(backend=backend_name, format=fmt), package)
    backend = create_backend(name)
    backend.load(package, BackendOptions(format=fmt, threads=threads))
    try:
        backend.warmup([(size, size)])
        rng = np.random.default_rng(0)
        content = rng.uniform(0, 1, (1, size, size, 3)).astype(np.float32)
        style = backend.predict_style(rng.uniform(0, 1, (1, 256, 256, 3)).astype(np.float32))
        frames, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            backend.stylize(content, style)
            frames += 1
        return elapsed / frames * 1e3, f"{package.key} {name}/{fmt} {threads} threads"
    finally:
        backend.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", default="", help="model packages folder (default: built-in)")
    parser.add_argument("--model", default="")
    parser.add_argument("--backend", default="litert")
    parser.add_argument("--format", default="")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()

    cost = recording_cost_us()
    filled = Metrics()
    filled.frame_done("litert", TIMINGS_MS)
    filled.frame_answered("litert", "ok")
    scrape = scrape_cost_ms(filled)
    frame, what = frame_ms(args.models_dir, args.model, args.backend, args.format, args.threads, args.size,
                           args.seconds)
    print(f"metrics recording: {cost:.2f} µs per frame (5 stage histograms, outcome counter, batch size, "
          f"version counter)")
    print(f"frame time at {args.size}²: {frame:.1f} ms ({what})")
    print(f"share of frame time: {cost / (frame * 1e3) * 100:.4f} %  (goal < 1 %)")
    print(f"/metrics render: {scrape:.2f} ms per scrape, on the metrics thread "
          f"({scrape / 5000 * 100:.3f} % of one core at a 5 s scrape interval)")


if __name__ == "__main__":
    main()
