"""The measuring half of ``benchmarks/gpu_check.sh``: the built-in model on every GPU backend
this machine can run, in-process and served, within a time budget.

Per backend (``tensorrt``, ``cuda``; ``tf-trt`` where TensorFlow has TensorRT):
  * engine build: load + warmup with an empty engine cache (TensorRT builds its engines;
    CUDA searches cuDNN's convolution algorithms), then warm start: the same again in a
    new backend over the now filled cache;
  * frames/s and per-call p50/p99 latency at 512², 1024² and 1080×1920, batch 1, 4 and 8
    (one engine profile covering them all, as a server configured for them would build);
  * GPU memory (NVML: growth over load and warmup; the device's total in use);
  * served: ``stylecast serve`` in a subprocess, one stream of 1024² raw frames, then 8 streams
    of 512² with ``max_batch`` 1 and 8, ``max_wait_ms`` 2 (what the GPU batching defaults are
    to be chosen from).
Without a GPU backend it says why, and measures the ``onnx`` CPU backend through the same
code with a small budget (``--dry-run``), so a dry run here exercises everything but the GPU.

Writes ``gpu_check.json`` (every figure) and ``gpu_check.txt`` (a short table) to ``--out``
after every step, so a run cut short still leaves what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from stylecast.backends import nvidia
from stylecast.backends.base import BackendOptions, backend_formats, create_backend
from stylecast.client.loadgen import synthetic_image
from stylecast.model import BUILTIN_DIR
from stylecast.backends.package import ModelPackage
from stylecast.model.preprocess import to_float
from stylecast.server.packages import find_package

SIZES = ((1024, 1024), (512, 512), (1080, 1920))   # the first is what engines are tuned for
BATCHES = (1, 4, 8)


def gpu_format(name: str) -> str:
    """The artifact format backend ``name`` loads first (the backend registry's order)."""
    return backend_formats(name)[0]


def availability() -> dict[str, str]:
    """GPU backend → why it cannot run here ("" when it can)."""
    import onnxruntime  # noqa: F401 - the ORT backends' runtime: this check needs it (make gpu-bundle)

    from stylecast.backends.cuda import gpu_problem
    from stylecast.backends.tensorrt import tensorrt_problem

    found = {"tensorrt": tensorrt_problem(), "cuda": gpu_problem("CUDAExecutionProvider")}
    try:
        from stylecast.backends.tftrt import tftrt_problem
    except ImportError as exc:
        found["tf-trt"] = f"TensorFlow is not installed ({exc.name})"
    else:
        found["tf-trt"] = tftrt_problem()
    return found


def environment() -> dict[str, Any]:
    import onnxruntime as ort

    cuda = nvidia.cuda()
    return {"onnxruntime": ort.__version__, "providers": ort.get_available_providers(),
            "cuda_driver": cuda.driver_version, "gpus": [g.__dict__ | {"arch": g.arch} for g in cuda.gpus],
            "gpu_problem": cuda.problem, "tensorrt": nvidia.tensorrt_version()[0] or nvidia.tensorrt_version()[1],
            "cpus": os.cpu_count(), "python": sys.version.split()[0]}


def timed(fn, min_calls: int, seconds: float) -> list[float]:
    """Milliseconds per call of ``fn``: at least ``min_calls`` calls, then until ``seconds`` pass."""
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - start < seconds:
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return times


def summary(times: list[float], batch: int) -> dict[str, float]:
    return {"calls": len(times), "fps": batch * 1e3 / statistics.fmean(times),
            "p50_ms": float(np.percentile(times, 50)), "p99_ms": float(np.percentile(times, 99))}


def options(name: str, cache: Path, max_batch: int, sizes=SIZES) -> BackendOptions:
    return BackendOptions(format=gpu_format(name), threads=os.cpu_count() or 1, workers=1, max_batch=max_batch,
                          frame_sizes=tuple(sizes), engine_cache_dir=str(cache))


def loaded(name: str, package: ModelPackage, opts: BackendOptions, sizes) -> tuple[Any, float]:
    """A loaded, warmed-up backend and the seconds that took."""
    start = time.perf_counter()
    backend = create_backend(name)
    backend.load(package, opts)
    backend.warmup(list(sizes))
    return backend, time.perf_counter() - start


def measure(name: str, package: ModelPackage, cache: Path, sizes, batches, seconds: float,
            deadline: float) -> dict[str, Any]:
    """Build/warm-start times, a size × batch table and GPU memory for backend ``name``."""
    out: dict[str, Any] = {"format": gpu_format(name), "cells": {}}
    used_before = nvidia.memory_used(0)
    opts = options(name, cache, max(batches), sizes)
    backend, out["cold_load_s"] = loaded(name, package, opts, sizes)
    try:
        out["memory"] = backend.memory_bytes()
        used = nvidia.memory_used(0)
        out["gpu_used_bytes"] = used
        out["gpu_used_growth_bytes"] = used - used_before if used is not None and used_before is not None else None
        style = backend.predict_style(to_float(synthetic_image(256, 1234)[None]))
        for h, w in sizes:
            frames = to_float(np.stack([synthetic_image(max(h, w), i)[:h, :w] for i in range(max(batches))]))
            for batch in batches:
                key = f"{h}x{w}/b{batch}"
                if time.monotonic() > deadline:
                    out["cells"][key] = {"skipped": "time budget"}
                    continue
                content, styles = frames[:batch], np.repeat(style, batch, axis=0)
                backend.stylize(content, styles)  # first call at this batch size
                out["cells"][key] = summary(timed(lambda: backend.stylize(content, styles), 3, seconds), batch)
    finally:
        backend.close()
    if time.monotonic() < deadline:
        again, out["warm_load_s"] = loaded(name, package, opts, sizes)
        again.close()
    return out


SERVED = (("1x1024", 1, 1, 1024), ("8x512/max_batch1", 1, 8, 512), ("8x512/max_batch8", 8, 8, 512))


def served(name: str, models_dir: str, cache: Path, sizes, plan, seconds: float, deadline: float) -> dict[str, Any]:
    """``stylecast serve`` with backend ``name``, warmed up for ``sizes``; per ``plan`` row
    (label, max_batch, streams, frame side) one ``stylecast bench`` client of raw frames."""
    from benchmarks.serving import Setup, load, server

    setup = Setup(models_dir, "", name, gpu_format(name), os.cpu_count() or 1, 1, seconds, 1.0)
    common = {"warmup_sizes": ",".join(f"{h}x{w}" for h, w in sizes),
              "process_max_side": max(max(s) for s in sizes), "engine_cache_dir": str(cache)}
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="stylecast-gpu-") as tmp:
        for label, batch, streams, side in plan:
            if time.monotonic() > deadline:
                out[label] = {"skipped": "time budget"}
                continue
            settings = common | {"max_batch": batch, "max_wait_ms": 2 if batch > 1 else 0}
            try:
                with server(setup, Path(tmp), **settings) as srv:
                    out[label] = load(srv, setup, size=side, wire="raw", streams=streams)
            except RuntimeError as exc:
                out[label] = {"error": str(exc)[-2000:]}
    return out


def table(results: dict[str, Any]) -> str:
    lines = []
    env = results["environment"]
    gpus = ", ".join(g["name"] for g in env["gpus"]) or f"none ({env['gpu_problem']})"
    lines.append(f"GPU: {gpus}; CUDA driver {env['cuda_driver'] or '-'}; ONNX Runtime {env['onnxruntime']} "
                 f"({', '.join(env['providers'])}); TensorRT {env['tensorrt']}")
    for name, why in results["availability"].items():
        if why:
            lines.append(f"{name}: not measured: {why}")
    for name, r in results["backends"].items():
        if "error" in r:
            lines.append(f"{name}: failed: {r['error']}")
            continue
        mem = r.get("memory", {})
        lines.append(f"\n{name} ({r['format']}): load+warmup cold {r['cold_load_s']:.1f} s, warm "
                     f"{r.get('warm_load_s', float('nan')):.1f} s; device memory {mem.get('device', 0) / 2**20:.0f} MiB, "
                     f"host {mem.get('host', 0) / 2**20:.0f} MiB")
        lines.append(f"  {'size':<11}{'batch':>6}{'frames/s':>11}{'p50 ms':>9}{'p99 ms':>9}")
        for key, c in r["cells"].items():
            size, batch = key.split("/b")
            if "skipped" in c:
                lines.append(f"  {size:<11}{batch:>6}   skipped ({c['skipped']})")
            else:
                lines.append(f"  {size:<11}{batch:>6}{c['fps']:11.1f}{c['p50_ms']:9.2f}{c['p99_ms']:9.2f}")
    for name, rows in results["served"].items():
        lines.append(f"\nserved by stylecast serve --backend {name} (raw RGB frames):")
        for label, r in rows.items():
            if "fps" in r:
                lines.append(f"  {label:<18}{r['fps']:8.1f} FPS  p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms"
                             f"  errors {r['errors']}")
            else:
                lines.append(f"  {label:<18}{r.get('skipped') or r.get('error')}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for gpu_check.json and gpu_check.txt")
    parser.add_argument("--budget-s", type=float, default=300.0, help="stop starting new measurements after this")
    parser.add_argument("--seconds", type=float, default=1.0, help="per size × batch cell")
    parser.add_argument("--served-seconds", type=float, default=4.0)
    parser.add_argument("--dry-run", action="store_true",
                        help="without a GPU backend, run the same code on the onnx CPU backend, briefly")
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.budget_s
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"environment": environment(), "availability": availability(),
                               "backends": {}, "served": {}}

    def save() -> None:
        (out / "gpu_check.json").write_text(json.dumps(results, indent=1, default=str))
        (out / "gpu_check.txt").write_text(table(results))

    save()
    package = find_package(BUILTIN_DIR)
    runnable = [n for n, why in results["availability"].items() if not why and gpu_format(n) in package.artifacts]
    sizes, batches, seconds, plan, served_s = SIZES, BATCHES, args.seconds, SERVED, args.served_seconds
    if not runnable and args.dry_run:
        runnable, sizes, batches, seconds, served_s = ["onnx"], ((64, 64), (48, 80)), (1, 2), 0.0, 1.5
        plan = (("1x64", 1, 1, 64), ("2x64/max_batch1", 1, 2, 64), ("2x64/max_batch2", 2, 2, 64))
        results["dry_run"] = "no GPU backend: the onnx CPU backend, tiny sizes, through the same code"
    for name in runnable:
        with tempfile.TemporaryDirectory(prefix=f"stylecast-{name}-cache-") as cache:
            try:
                results["backends"][name] = measure(name, package, Path(cache), sizes, batches, seconds, deadline)
            except Exception as exc:  # a backend that fails to build or run is a finding, not the end
                results["backends"][name] = {"error": f"{type(exc).__name__}: {exc}"[-2000:]}
            save()
            results["served"][name] = served(name, str(BUILTIN_DIR), Path(cache), sizes, plan, served_s, deadline)
            save()
    print(table(results), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
