"""``make bench``, last part: what gRPC alone costs per frame-sized message (no inference).

An echo service on ``grpc.aio`` with the server's channel options answers one bidi stream of
messages the size of a raw RGB frame at 384² and 512² and of a JPEG frame; the client keeps
16 messages in flight, as the SDK does.  It prints messages per second and the CPU per
message of the server process and of the client: a floor under what serving a frame costs
on top of inference, on the same cores.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import time

import grpc

from benchmarks.serving import cpu_seconds
from stylecast.client.channel import channel_options
from stylecast.server.app import grpc_options
from stylecast.server.config import ServerConfig

METHOD = "/stylecast.bench.Echo/Stream"
SIZES = {"raw 384²": 384 * 384 * 3, "raw 512²": 512 * 512 * 3, "JPEG ~40 kB": 40_000}
WINDOW = 16


def _same(message: bytes) -> bytes:
    return message


def _serve(ports: multiprocessing.Queue) -> None:
    async def echo(requests, context):
        async for message in requests:
            yield message

    async def main() -> None:
        server = grpc.aio.server(options=grpc_options(ServerConfig()))
        handler = grpc.method_handlers_generic_handler(
            "stylecast.bench.Echo", {"Stream": grpc.stream_stream_rpc_method_handler(echo, _same, _same)})
        server.add_generic_rpc_handlers((handler,))
        ports.put(server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        await server.wait_for_termination()

    asyncio.run(main())


async def _stream(port: int, size: int, seconds: float) -> tuple[int, float]:
    """Echo ``size``-byte messages for ``seconds``; (messages answered, elapsed)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=channel_options()) as channel:
        call = channel.stream_stream(METHOD, request_serializer=_same, response_deserializer=_same)()
        payload, window = os.urandom(size), asyncio.Semaphore(WINDOW)
        start = time.perf_counter()

        async def send() -> None:
            while time.perf_counter() - start < seconds:
                await window.acquire()
                await call.write(payload)
            await call.done_writing()

        writer, answered = asyncio.create_task(send()), 0
        async for _ in call:
            answered += 1
            window.release()
        await writer
        return answered, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args(argv)
    ports: multiprocessing.Queue = multiprocessing.get_context("spawn").Queue()
    server = multiprocessing.get_context("spawn").Process(target=_serve, args=(ports,), daemon=True)
    server.start()
    try:
        port = ports.get(timeout=60)
        asyncio.run(_stream(port, 1000, 0.5))  # connect and warm up
        print(f"gRPC echo, no inference ({WINDOW} messages in flight, {os.cpu_count()} CPUs)")
        for label, size in SIZES.items():
            server_cpu, client_cpu = cpu_seconds(server.pid), time.process_time()
            answered, elapsed = asyncio.run(_stream(port, size, args.seconds))
            client_cpu = time.process_time() - client_cpu
            server_ms = ("n/a" if server_cpu is None
                         else f"{(cpu_seconds(server.pid) - server_cpu) / answered * 1e3:.2f} ms")
            print(f"  {label:<12}{answered / elapsed:8.0f} messages/s   CPU per message: server {server_ms}"
                  f" + client {client_cpu / answered * 1e3:.2f} ms")
    finally:
        server.terminate()
        server.join(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
