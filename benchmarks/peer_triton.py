"""``make bench-peers``: NVIDIA Triton (through PyTriton) serving the same model, and its load client.

Runs inside the peers' own virtual environment (``.venv-peers``: nvidia-pytriton, tritonclient,
ai-edge-litert and stylecast installed without its dependencies), never in the project's:

    python benchmarks/peer_triton.py serve --package DIR --format tflite-int8 --workers 2 --threads 1 \\
        --style style.npy --grpc-port P --http-port P --metrics-port P
    python benchmarks/peer_triton.py load --target HOST:P --frames DIR --size 384 --wire raw --streams 4 \\
        --seconds 20 --warmup 2

``serve`` binds two Python models in Triton: ``stylize_rgb`` (H×W×3 uint8 in and out) and
``stylize_jpeg`` (JPEG bytes in and out).  Their callables do what stylecast does to a frame, with
the same functions: ``codecs.decode`` (JPEG only), ``to_float``, ``LiteRTBackend.stylize`` on the same
artifact with the same workers × threads, ``to_uint8``, ``codecs.encode`` (JPEG only); the style
vector is computed once at start from the style image the benchmark registers with stylecast.
Each model has as many Triton instances as the backend has workers, all sharing its interpreters.

``load`` runs N gRPC streams (``ModelStreamInfer`` through ``tritonclient.grpc.aio``), each with
at most 16 requests in flight, as stylecast's SDK keeps; prints one JSON line (frames/s, latency
percentiles from send to answer, errors) measured over the last ``--seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np

WINDOW = 16  # requests in flight per stream: stylecast's SDK default (MAX_IN_FLIGHT)
MODELS = {"raw": "stylize_rgb", "jpeg": "stylize_jpeg"}


def serve(args: argparse.Namespace) -> int:
    # The Python backend's stub links libpython by soname.  Without this it can load the
    # system's copy while this venv's interpreter is another patch release, and the model
    # fails to load ("'_thread.RLock' object has no attribute '_recursion_count'").
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    os.environ["LD_LIBRARY_PATH"] = ":".join(p for p in (libdir, os.environ.get("LD_LIBRARY_PATH", "")) if p)

    from pytriton.model_config import ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    from stylecast.backends.base import BackendOptions
    from stylecast.backends.litert import LiteRTBackend
    from stylecast.backends.memory import keep_freed_memory
    from stylecast.backends.package import load_package
    from stylecast.model.preprocess import to_float, to_uint8
    from stylecast.server import codecs

    keep_freed_memory()  # the allocator setting `stylecast serve` runs with
    backend = LiteRTBackend()
    backend.load(load_package(args.package),
                 BackendOptions(format=args.format, threads=args.threads, workers=args.workers))
    backend.warmup([(s, s) for s in args.sizes])
    vector = backend.predict_style(to_float(np.load(args.style)[None]))

    def stylize(frame: np.ndarray) -> np.ndarray:
        return to_uint8(backend.stylize(to_float(frame[None]), vector))[0]

    def infer_rgb(requests):
        return [{"image": stylize(r["image"])} for r in requests]

    def infer_jpeg(requests):
        out = []
        for r in requests:
            rgb, _ = codecs.decode(bytes(r["image"][0]), max_pixels=args.max_pixels, draft_side=args.max_side)
            out.append({"image": np.array([codecs.encode(stylize(rgb), "jpeg")], dtype=np.object_)})
        return out

    config = TritonConfig(grpc_port=args.grpc_port, http_port=args.http_port, metrics_port=args.metrics_port,
                          grpc_address="127.0.0.1", http_address="127.0.0.1", log_verbose=0)
    with Triton(config=config) as triton:
        for wire, fn in (("raw", infer_rgb), ("jpeg", infer_jpeg)):
            tensor = (Tensor(name="image", dtype=np.uint8, shape=(-1, -1, 3)) if wire == "raw"
                      else Tensor(name="image", dtype=bytes, shape=(1,)))
            triton.bind(MODELS[wire], [fn] * args.workers, inputs=[tensor], outputs=[tensor],
                        config=ModelConfig(batching=False))
        print("serving", flush=True)
        triton.serve()
    backend.close()
    return 0


def _frames(folder: Path, size: int, wire: str) -> list:
    import tritonclient.grpc.aio as tc

    inputs = []
    if wire == "raw":
        for frame in np.load(folder / f"frames-{size}-raw.npy"):
            x = tc.InferInput("image", list(frame.shape), "UINT8")
            x.set_data_from_numpy(frame)
            inputs.append(x)
    else:
        for path in sorted(folder.glob(f"frames-{size}-jpeg-*.jpg")):
            x = tc.InferInput("image", [1], "BYTES")
            x.set_data_from_numpy(np.array([path.read_bytes()], dtype=np.object_))
            inputs.append(x)
    return inputs


async def _stream(client, model: str, frames: list, stop_at: float) -> list[tuple[float, float, bool]]:
    """(answered at, latency ms, ok) per answer of one stream until ``stop_at``."""
    window, sent = asyncio.Semaphore(WINDOW), {}

    async def requests():
        i = 0
        while time.perf_counter() < stop_at:
            await window.acquire()
            sent[str(i)] = time.perf_counter()
            yield {"model_name": model, "inputs": [frames[i % len(frames)]], "request_id": str(i)}
            i += 1

    got = []
    responses = client.stream_infer(requests())
    async for result, error in responses:
        now = time.perf_counter()
        window.release()
        if error is not None:
            got.append((now, float("nan"), False))
        else:
            result.as_numpy("image")  # what a client does with the answer (stylecast's SDK decodes too)
            start = sent.pop(result.get_response().id, now)
            got.append((now, (now - start) * 1e3, True))
        if now > stop_at:
            responses.cancel()
            break
    return got


async def _load(args: argparse.Namespace) -> dict:
    import tritonclient.grpc.aio as tc

    frames = _frames(Path(args.frames), args.size, args.wire)
    model = MODELS[args.wire]
    client = tc.InferenceServerClient(args.target)
    try:
        while not await client.is_model_ready(model):
            await asyncio.sleep(0.2)
        start = time.perf_counter()
        window_start, stop_at = start + args.warmup, start + args.warmup + args.seconds
        runs = await asyncio.gather(*(_stream(client, model, frames, stop_at) for _ in range(args.streams)))
    finally:
        await client.close()
    window = [r for run in runs for r in run if window_start <= r[0] <= stop_at]
    ok = np.array([lat for _, lat, good in window if good] or [np.nan])
    return {"streams": args.streams, "size": args.size, "wire": args.wire, "seconds": args.seconds,
            "frames": int(np.isfinite(ok).sum()), "answered": len(window),
            "errors": sum(not good for *_, good in window), "dropped": 0,
            "fps": float(np.isfinite(ok).sum() / args.seconds),
            "p50_ms": float(np.percentile(ok, 50)), "p99_ms": float(np.percentile(ok, 99))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--package", required=True, help="model package folder NAME/VERSION")
    s.add_argument("--format", default="tflite-int8")
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--style", required=True, help=".npy of the 256×256×3 uint8 style image")
    s.add_argument("--sizes", type=lambda v: [int(x) for x in v.split(",")], default=[384])
    s.add_argument("--max-side", type=int, default=512, help="stylecast's process_max_side")
    s.add_argument("--max-pixels", type=int, default=40_000_000)
    for name in ("grpc", "http", "metrics"):
        s.add_argument(f"--{name}-port", type=int, required=True)
    ld = sub.add_parser("load")
    ld.add_argument("--target", required=True)
    ld.add_argument("--frames", required=True, help="folder with frames-SIZE-raw.npy / frames-SIZE-jpeg-*.jpg")
    ld.add_argument("--size", type=int, default=384)
    ld.add_argument("--wire", choices=tuple(MODELS), default="raw")
    ld.add_argument("--streams", type=int, default=1)
    ld.add_argument("--seconds", type=float, default=20.0)
    ld.add_argument("--warmup", type=float, default=2.0)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args)
    print(json.dumps(asyncio.run(_load(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
