"""``make bench-bounds``: what the resource bounds save, measured on a real ``stylecast serve``.

1. An 8×8 frame asking for a 16384×16384 output (a 200-byte request): how fast the refusal
   comes back and how much the server's RSS (and its peak, VmHWM) grows.
2. LIVE clients that send raw 512² frames as fast as they can and never read an answer:
   the server's RSS growth and the frame bytes it holds (``stylecast_stream_buffered_bytes``)
   while one, then four such clients push, and after ``stall_timeout_s`` ends their streams.

The server is a new process (``python -m stylecast.client serve``) on the built-in model;
RSS is read from ``/proc/PID/status``.  Before the bounds, (1) cost about 7 s of CPU and
+2.1 GB, and (2) each non-reading client could hold ~256 answers (≈ 200 MB at 512² raw).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np

from stylecast.client.channel import channel_options
from stylecast.client.messages import encoded_bytes
from stylecast.v1 import stylecast_pb2 as pb
from stylecast.v1 import stylecast_pb2_grpc as pb_grpc

MiB = 1 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    return tuple(int(re.search(rf"{k}:\s+(\d+) kB", status).group(1)) * 1024 for k in ("VmRSS", "VmHWM"))


def buffered(metrics_port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    return float(re.search(r"^stylecast_stream_buffered_bytes (\S+)$", text, re.M).group(1))


def start_server(folder: Path, stall_s: float) -> tuple[subprocess.Popen, int, int]:
    port, metrics_port = free_port(), free_port()
    env_flags = ["--port", str(port), "--metrics-port", str(metrics_port), "--host", "127.0.0.1",
                 "--style-store", str(folder / "styles.db"), "--upload-dir", str(folder / "models")]
    proc = subprocess.Popen([sys.executable, "-m", "stylecast.client", "serve", *env_flags],
                            stderr=subprocess.PIPE, text=True,
                            env={"STYLECAST_STALL_TIMEOUT_S": str(stall_s), "PATH": "/usr/bin:/bin"})
    for line in proc.stderr:
        if "stylecast serving" in line:
            break
    else:
        raise RuntimeError("server did not start")
    threading.Thread(target=proc.stderr.read, daemon=True).start()   # keep its log pipe drained
    return proc, port, metrics_port


def raw(img: np.ndarray) -> pb.Image:
    return pb.Image(data=img.tobytes(), pixel_format=pb.PIXEL_FORMAT_RGB24, width=img.shape[1], height=img.shape[0])


async def huge_output(stub, style_id: str, pid: int) -> None:
    before = rss(pid)
    req = pb.StylizeImageRequest(config=pb.StreamConfig(style_id=style_id, output=pb.OutputOptions(
        width=16384, height=16384)), image=raw(np.full((8, 8, 3), 128, np.uint8)))
    start = time.perf_counter()
    try:
        await stub.StylizeImage(req)
        outcome = "answered (!)"
    except grpc.aio.AioRpcError as exc:
        outcome = f"{exc.code().name}: {exc.details()[:90]}…"
    took = time.perf_counter() - start
    after = rss(pid)
    print(f"[1] 8x8 frame asking for 16384x16384 ({req.ByteSize()} bytes): {outcome}")
    print(f"    refused in {took * 1000:.1f} ms; server RSS {before[0] / MiB:.0f} → {after[0] / MiB:.0f} MiB "
          f"(+{(after[0] - before[0]) / MiB:.1f}), peak +{(after[1] - before[1]) / MiB:.1f} MiB")


async def non_reading_clients(channel, style_id: str, pid: int, metrics_port: int, clients: int,
                              seconds: float, stall_s: float) -> None:
    frame = raw(np.random.default_rng(0).integers(0, 256, (512, 512, 3), np.uint8))
    stub = pb_grpc.StyleTransferStub(channel)
    before = rss(pid)[0]
    calls, writers, peak_rss, peak_held, sent = [], [], before, 0.0, [0] * clients
    stop = asyncio.Event()

    async def push(i: int, call) -> None:
        await call.write(pb.StylizeRequest(config=pb.StreamConfig(
            style_id=style_id, mode=pb.STREAM_MODE_LIVE, output=pb.OutputOptions(encoding=pb.ENCODING_RAW_RGB24))))
        while not stop.is_set():                      # never reads: only flow control stops it
            await call.write(pb.StylizeRequest(frame=pb.Frame(id=sent[i], image=frame)))
            sent[i] += 1

    for i in range(clients):
        call = stub.Stylize()
        calls.append(call)
        writers.append(asyncio.ensure_future(push(i, call)))
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        await asyncio.sleep(0.25)
        peak_rss = max(peak_rss, rss(pid)[0])
        peak_held = max(peak_held, await asyncio.to_thread(buffered, metrics_port))
    stop.set()
    await asyncio.wait(writers, timeout=1.0)
    blocked = sum(not w.done() for w in writers)
    print(f"    {clients} client(s), {seconds:g} s: frames the server read {sent}; "
          f"{blocked} client(s) blocked by flow control (the server stopped reading them)")
    print(f"      server RSS +{(peak_rss - before) / MiB:.0f} MiB at peak; frame bytes held at peak "
          f"{peak_held / MiB:.1f} MiB")
    await asyncio.sleep(stall_s + 1)
    held_after = await asyncio.to_thread(buffered, metrics_port)
    async def status(call) -> str:
        try:
            while await call.read() is not grpc.aio.EOF:
                pass
            return "OK"
        except grpc.aio.AioRpcError as exc:
            return exc.code().name

    codes = []
    for call in calls:
        try:
            codes.append(await asyncio.wait_for(status(call), 30))
        except asyncio.TimeoutError:
            codes.append("nothing more readable in 30 s (a 64 KiB window without BDP probing cannot take a "
                         "0.75 MiB message: a grpc client-side limit)")
    for w in writers:
        w.cancel()
    await asyncio.gather(*writers, return_exceptions=True)
    print(f"      {stall_s + 1:g} s later: frame bytes held {held_after / MiB:.1f} MiB; the streams ended with "
          f"{', '.join(sorted(set(codes)))}; RSS +{(rss(pid)[0] - before) / MiB:.0f} MiB")


async def run(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        proc, port, metrics_port = start_server(Path(tmp), args.stall)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=channel_options()) as channel:
                stub = pb_grpc.StyleTransferStub(channel)
                style_png = np.random.default_rng(1).integers(0, 256, (64, 64, 3), np.uint8)
                upload = [pb.StyleUpload(name="b", chunk=encoded_bytes(style_png))]
                style = (await stub.RegisterStyle(iter(upload))).style
                warm = pb.StylizeImageRequest(
                    config=pb.StreamConfig(style_id=style.id, output=pb.OutputOptions(encoding=pb.ENCODING_RAW_RGB24)),
                    image=raw(np.zeros((512, 512, 3), np.uint8)))
                for _ in range(3):  # every worker warm at the clients' size: inference memory is not what is measured
                    await asyncio.gather(*(stub.StylizeImage(warm) for _ in range(4)))
                await huge_output(stub, style.id, proc.pid)
            print("[2] LIVE clients pushing raw 512² frames (0.75 MiB each) as fast as they can, never reading "
                  "(stream_buffer_bytes 32 MiB, frame_memory_bytes 1 GiB)")
            for window, options in (("a default client (its receive window grows: answers pile up on its side)", []),
                                    ("a client keeping a 64 KiB receive window (answers pile up on the server)",
                                     [("grpc.http2.bdp_probe", 0)])):
                print(f"  {window}")
                for clients in (1, 4):
                    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}",
                                                         options=channel_options() + options) as channel:
                        await non_reading_clients(channel, style.id, proc.pid, metrics_port, clients, args.seconds,
                                                  args.stall)
        finally:
            proc.terminate()
            proc.wait(30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="how long the non-reading clients push")
    parser.add_argument("--stall", type=float, default=5.0, help="the server's stall_timeout_s")
    asyncio.run(run(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
