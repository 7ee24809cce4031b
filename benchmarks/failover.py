"""``make bench`` [failover]: one SDK stream at 30 frames/s against two replicas sharing one Redis
while each replica is restarted in turn (SIGTERM, then a new process on the same port).

Reports frames sent, answered, lost (goal 0), answered twice (goal 0), reordered (goal 0), and the
gaps between consecutive answers: the median (the frame interval, 33 ms) next to the longest
(what a restart costs the viewer).  Everything is real: ``redis-server`` (Debian), two
``stylecast serve`` processes with the built-in model, the SDK's round_robin + health checking +
stream failover.  Skipped with a reason when ``redis-server`` is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks.startup import free_port
from stylecast.client import AsyncClient
from stylecast.client.loadgen import synthetic_image


async def wait_serving(port: int, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    """Poll the gRPC health service until the process answers SERVING."""
    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"replica on port {port} exited with {proc.returncode}")
            try:
                res = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if res.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"replica on port {port} not SERVING after {timeout:g} s")
            await asyncio.sleep(0.1)


class Replica:
    """``stylecast serve`` on a fixed port, restartable there."""

    def __init__(self, port: int, store: str, workdir: Path) -> None:
        self.port, self.store, self.workdir = port, store, workdir
        self.proc: subprocess.Popen | None = None
        self.restarts = 0

    async def start(self) -> None:
        log = open(self.workdir / f"replica-{self.port}.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stylecast.client", "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--metrics-port", "0", "--style-store", self.store, "--backend", "litert", "--format", "tflite-int8",
             "--workers", "1", "--threads", "1", "--upload-dir", str(self.workdir / "uploads")],
            stdout=log, stderr=log)
        await wait_serving(self.port, self.proc)

    async def restart(self) -> None:
        """SIGTERM (drain), wait for the exit, start a new process on the same port."""
        self.proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(self.proc.wait, 60)
        self.restarts += 1
        await self.start()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


async def run(seconds: float, fps: float, size: tuple[int, int]) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="stylecast-failover-"))
    redis_port = free_port()
    redis = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(redis_port), "--dir", str(workdir),
                              "--appendonly", "yes", "--save", "", "--logfile", str(workdir / "redis.log")])
    replicas = [Replica(free_port(), f"redis://127.0.0.1:{redis_port}/0", workdir) for _ in range(2)]
    try:
        await asyncio.gather(*(r.start() for r in replicas))
        target = "ipv4:" + ",".join(f"127.0.0.1:{r.port}" for r in replicas)
        async with AsyncClient(target) as client:
            style = await client.register_style(synthetic_image(256, seed=1), name="bench")
            frame = synthetic_image(max(size), seed=2)[:size[1], :size[0]]
            interval = 1.0 / fps
            total = int(seconds * fps)

            async def paced():
                start = time.perf_counter()
                for i in range(total):
                    await asyncio.sleep(max(0.0, start + i * interval - time.perf_counter()))
                    yield frame

            async def restarts():
                for replica in replicas:          # each in turn, the stream's one included
                    await asyncio.sleep(seconds / 4)
                    await replica.restart()

            restarter = asyncio.create_task(restarts())
            ids, times, errors = [], [], 0
            async for r in client.stream(paced(), style, output="raw", max_in_flight=8):
                ids.append(r.id)
                times.append(time.perf_counter())
                errors += not r.ok
            await restarter
    finally:
        for r in replicas:
            r.kill()
        redis.kill()
        redis.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    gaps = [b - a for a, b in zip(times, times[1:])]
    return {"sent": total, "answered": len(ids), "lost": len(set(range(total)) - set(ids)),
            "twice": len(ids) - len(set(ids)), "reordered": sum(b != a + 1 for a, b in zip(ids, ids[1:])),
            "errors": errors, "restarts": sum(r.restarts for r in replicas),
            "gap_median_ms": statistics.median(gaps) * 1e3, "gap_max_ms": max(gaps) * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--size", default="320x240", help="WxH of the raw RGB frames")
    args = parser.parse_args()
    print("[failover] one SDK stream, two replicas + Redis, each replica restarted (SIGTERM + new process)")
    if shutil.which("redis-server") is None:
        print("  skipped: redis-server not installed (make test installs Debian's redis-server)")
        return
    w, h = (int(v) for v in args.size.lower().split("x"))
    res = asyncio.run(run(args.seconds, args.fps, (w, h)))
    print(f"  {args.fps:g} fps, {w}x{h} raw RGB, {args.seconds:g} s, {res['restarts']} restarts")
    print(f"  sent {res['sent']}  answered {res['answered']}  lost {res['lost']}  answered twice {res['twice']}  "
          f"reordered {res['reordered']}  frame errors {res['errors']}")
    print(f"  gap between answers: median {res['gap_median_ms']:.0f} ms, longest {res['gap_max_ms']:.0f} ms "
          f"({res['gap_max_ms'] / res['gap_median_ms']:.1f}x the median)")


if __name__ == "__main__":
    main()
