"""``make bench`` [failover]: one SDK stream at 30 frames/s against two replicas sharing one Redis
while each replica is restarted in turn (SIGTERM, then a new process on the same port); then a
stream while Redis is killed and restarted (same port, same append-only file).

Reports frames sent, answered, lost (goal 0), answered twice (goal 0), reordered (goal 0), and the
gaps between consecutive answers: the median (the frame interval, 33 ms) next to the longest
(what a restart costs the viewer); for the Redis outage also the statuses a client calling
GetStyle without retries saw, and how soon after Redis came back the same server answered again.  Everything is real: ``redis-server`` (Debian), two
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
from stylecast.v1 import stylecast_pb2 as pb
from stylecast.v1 import stylecast_pb2_grpc as pb_grpc


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


def redis_server(port: int, workdir: Path) -> subprocess.Popen:
    return subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", str(workdir),
                             "--appendonly", "yes", "--appendfsync", "always", "--save", "",
                             "--logfile", str(workdir / "redis.log")])


async def stream_while(client: AsyncClient, style, frame, seconds: float, fps: float, disturb) -> dict:
    """One stream of ``seconds × fps`` paced frames while ``disturb()`` runs; answer statistics."""
    interval, total = 1.0 / fps, int(seconds * fps)

    async def paced():
        start = time.perf_counter()
        for i in range(total):
            await asyncio.sleep(max(0.0, start + i * interval - time.perf_counter()))
            yield frame

    disturbing = asyncio.create_task(disturb())
    ids, times, errors = [], [], 0
    async for r in client.stream(paced(), style, output="raw", max_in_flight=8):
        ids.append(r.id)
        times.append(time.perf_counter())
        errors += not r.ok
    extra = await disturbing
    gaps = [b - a for a, b in zip(times, times[1:])]
    return {"sent": total, "answered": len(ids), "lost": len(set(range(total)) - set(ids)),
            "twice": len(ids) - len(set(ids)), "reordered": sum(b != a + 1 for a, b in zip(ids, ids[1:])),
            "errors": errors, "gap_median_ms": statistics.median(gaps) * 1e3, "gap_max_ms": max(gaps) * 1e3,
            **(extra or {})}


async def run(seconds: float, fps: float, size: tuple[int, int]) -> tuple[dict, dict]:
    """(replicas restarted in turn, Redis killed and restarted) under one stream each."""
    workdir = Path(tempfile.mkdtemp(prefix="stylecast-failover-"))
    redis_port = free_port()
    redis = redis_server(redis_port, workdir)
    replicas = [Replica(free_port(), f"redis://127.0.0.1:{redis_port}/0", workdir) for _ in range(2)]
    try:
        await asyncio.gather(*(r.start() for r in replicas))
        target = "ipv4:" + ",".join(f"127.0.0.1:{r.port}" for r in replicas)
        async with AsyncClient(target) as client:
            style = await client.register_style(synthetic_image(256, seed=1), name="bench")
            frame = synthetic_image(max(size), seed=2)[:size[1], :size[0]]

            async def restarts():
                for replica in replicas:          # each in turn, the stream's one included
                    await asyncio.sleep(seconds / 4)
                    await replica.restart()
                return {"restarts": sum(r.restarts for r in replicas)}

            restarted = await stream_while(client, style, frame, seconds, fps, restarts)

            async def redis_outage():
                """Redis killed a third in and started again (same port, same AOF) two thirds in;
                GetStyle probes on one replica every 100 ms, without retries: what clients see,
                and how soon after Redis is back the same server answers again."""
                nonlocal redis
                third = seconds / 6          # this stream lasts seconds / 2
                codes: dict[str, int] = {}
                detail = ""
                async with grpc.aio.insecure_channel(f"127.0.0.1:{replicas[0].port}") as channel:
                    stub = pb_grpc.StyleTransferStub(channel)

                    async def probe() -> str:
                        nonlocal detail
                        try:
                            await stub.GetStyle(pb.GetStyleRequest(id=style.id), timeout=5)
                            return "OK"
                        except grpc.aio.AioRpcError as exc:
                            detail = detail or exc.details()
                            return exc.code().name

                    await asyncio.sleep(third)
                    redis.kill()
                    redis.wait()
                    end = time.perf_counter() + third
                    while time.perf_counter() < end:
                        code = await probe()
                        codes[code] = codes.get(code, 0) + 1
                        await asyncio.sleep(0.1)
                    redis = redis_server(redis_port, workdir)
                    back = time.perf_counter()
                    while (code := await probe()) != "OK" and time.perf_counter() - back < 30:
                        await asyncio.sleep(0.05)
                    recovered = time.perf_counter() - back if code == "OK" else None
                return {"probes": codes, "detail": detail, "recovered_s": recovered}

            outage = await stream_while(client, style, frame, seconds / 2, fps, redis_outage)
    finally:
        for r in replicas:
            r.kill()
        redis.kill()
        redis.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    return restarted, outage


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
    restarted, outage = asyncio.run(run(args.seconds, args.fps, (w, h)))
    for title, res in ((f"{restarted['restarts']} replica restarts", restarted), ("Redis killed, restarted", outage)):
        print(f"  {title}: {args.fps:g} fps, {w}x{h} raw RGB, {res['sent'] / args.fps:g} s")
        print(f"    sent {res['sent']}  answered {res['answered']}  lost {res['lost']}  answered twice {res['twice']}  "
              f"reordered {res['reordered']}  frame errors {res['errors']}")
        print(f"    gap between answers: median {res['gap_median_ms']:.0f} ms, longest {res['gap_max_ms']:.0f} ms "
              f"({res['gap_max_ms'] / res['gap_median_ms']:.1f}x the median)")
    recovered = outage["recovered_s"]
    print(f"    GetStyle probes (no retries) during it: {outage['probes']}; first refusal: {outage['detail']!r}")
    print(f"    answered OK again {recovered:.2f} s after Redis restarted (same server process)"
          if recovered is not None else "    not recovered within the run")


if __name__ == "__main__":
    main()
