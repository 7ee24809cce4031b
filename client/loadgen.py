"""Load generation for ``stylecast bench`` and ``make bench``: N concurrent streams of
pre-encoded synthetic frames, measured on the client side."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import asdict, dataclass

import numpy as np

from stylecast.client.aio import AsyncClient
from stylecast.client.channel import PemSource
from stylecast.client.messages import to_image
from stylecast.client.types import FrameResult
from stylecast.v1 import stylecast_pb2 as pb

WIRES = ("raw", "jpeg")


def synthetic_image(size: int, seed: int) -> np.ndarray:
    """A photo-like size×size RGB test image: smooth colour fields, edges and mild noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    channels = []
    for _ in range(3):
        fx, fy, phase = rng.uniform(1, 6), rng.uniform(1, 6), rng.uniform(0, 2 * np.pi)
        channels.append(0.5 + 0.35 * np.sin(2 * np.pi * (fx * x + fy * y) + phase))
    img = np.stack(channels, -1)
    for _ in range(6):  # a few flat rectangles give hard edges
        x0, y0 = rng.integers(0, size, 2)
        w, h = rng.integers(size // 10, size // 3, 2)
        img[y0:y0 + h, x0:x0 + w] = rng.uniform(0, 1, 3)
    img += rng.normal(0, 0.02, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def encode_frames(size: int, wire: str, count: int = 4) -> list[pb.Image]:
    """``count`` distinct frames, encoded once up front (raw RGB24 or JPEG quality 90)."""
    from PIL import Image

    if wire not in WIRES:
        raise ValueError(f"unknown wire format {wire!r}; choose one of {', '.join(WIRES)}")
    frames = []
    for seed in range(count):
        pixels = synthetic_image(size, seed)
        if wire == "raw":
            frames.append(to_image(pixels))
        else:
            buf = io.BytesIO()
            Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
            frames.append(pb.Image(data=buf.getvalue()))
    return frames


@dataclass(frozen=True)
class LoadReport:
    streams: int
    size: int
    wire: str
    mode: str
    offered_fps: float   # per stream; 0 = as fast as the server accepts
    seconds: float       # measured window
    frames: int          # stylized frames received in the window
    answered: int        # all answers in the window: stylized, dropped or failed
    dropped: int
    errors: int
    fps: float           # aggregate stylized frames per second
    p50_ms: float
    p99_ms: float
    infer_ms: float      # median server inference time
    first_error: str = ""
    # where a frame's time went, p50 / p99 (ms): waiting on the server between receipt and
    # inference (StageTimings.queue_ms), and outside the server's stages ("wire": latency minus the
    # server's total_ms: the way in, the way back, the client's own Python)
    queue_p50_ms: float = float("nan")
    queue_p99_ms: float = float("nan")
    wire_p50_ms: float = float("nan")
    wire_p99_ms: float = float("nan")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


async def _one_stream(client: AsyncClient, style_id: str, frames: list[pb.Image], *, mode: str, wire: str,
                      fps: float, stop_at: float) -> list[tuple[float, FrameResult]]:
    async def source() -> AsyncIterator[pb.Image]:
        i = 0
        next_at = time.perf_counter()
        while time.perf_counter() < stop_at:
            yield frames[i % len(frames)]
            i += 1
            if fps > 0:
                next_at += 1.0 / fps
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))

    got = []
    async with aclosing(client.stream(source(), style_id, mode=mode,
                                      output="raw" if wire == "raw" else "jpeg")) as results:
        async for result in results:
            if (now := time.perf_counter()) > stop_at:
                break  # cancel the stream instead of draining its queue
            got.append((now, result))
    return got


async def run_load(target: str, *, streams: int = 1, seconds: float = 10.0, size: int = 384, wire: str = "raw",
                   mode: str = "every_frame", fps: float = 0.0, warmup_s: float = 2.0, style_id: str = "",
                   token: str | None = None, ca: PemSource | None = None, cert: PemSource | None = None,
                   key: PemSource | None = None) -> LoadReport:
    """Run ``streams`` concurrent streams for ``warmup_s + seconds``; report the last ``seconds``.
    ``token``, ``ca``, ``cert``, ``key``: as :class:`AsyncClient`'s."""
    frames = encode_frames(size, wire)
    async with AsyncClient(target, token=token, ca=ca, cert=cert, key=key) as client:
        await client.wait_ready()
        if not style_id:
            style_id = (await client.register_style(synthetic_image(256, 1234), name="bench")).id
        start = time.perf_counter()
        window_start, stop_at = start + warmup_s, start + warmup_s + seconds
        runs = await asyncio.gather(*(
            _one_stream(client, style_id, frames, mode=mode, wire=wire, fps=fps, stop_at=stop_at)
            for _ in range(streams)))
    window = [r for run in runs for t, r in run if window_start <= t <= stop_at]
    ok = [r for r in window if r.ok]
    errors = [r for r in window if r.status == "error"]
    latencies = np.array([r.latency_ms for r in ok if r.latency_ms is not None] or [np.nan])
    infer = np.array([r.timings.infer_ms for r in ok if r.timings is not None] or [np.nan])
    timed = [r for r in ok if r.timings is not None and r.latency_ms is not None]
    queue = np.array([r.timings.queue_ms for r in timed] or [np.nan])
    wire_ms = np.array([r.latency_ms - r.timings.total_ms for r in timed] or [np.nan])
    return LoadReport(
        streams=streams, size=size, wire=wire, mode=mode, offered_fps=fps, seconds=seconds,
        frames=len(ok), answered=len(window), dropped=sum(r.status == "dropped" for r in window), errors=len(errors),
        fps=len(ok) / seconds, p50_ms=float(np.percentile(latencies, 50)),
        p99_ms=float(np.percentile(latencies, 99)), infer_ms=float(np.median(infer)),
        first_error=str(errors[0].error) if errors else "",
        queue_p50_ms=float(np.percentile(queue, 50)), queue_p99_ms=float(np.percentile(queue, 99)),
        wire_p50_ms=float(np.percentile(wire_ms, 50)), wire_p99_ms=float(np.percentile(wire_ms, 99)))
