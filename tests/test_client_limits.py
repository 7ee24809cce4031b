"""The SDK checks sizes before sending (against its own and the server's limits, learnt with
GetLimits) and says what to do; streams past their deadline report DEADLINE_EXCEEDED."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import encoded, picture

from stylecast.client import AsyncClient, DeadlineExceeded, InvalidArgument, Limits, ResourceExhausted
from stylecast.client.messages import max_raw_pixels
from stylecast.server.config import ServerConfig

STYLIZE_IMAGE = "/stylecast.v1.StyleTransfer/StylizeImage"
MIB = 1 << 20
README = Path(__file__).resolve().parents[1] / "README.md"


def calls(server, method: str) -> float:
    """Calls of ``method`` the server has seen (any status)."""
    registry = server.engine.metrics.registry
    total = 0.0
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name.endswith("_count") and sample.labels.get("method") == method:
                total += sample.value
    return total


@pytest.fixture
async def small(server_factory):
    """A server whose messages are limited to 1 MiB and images to 0.5 MP, and a style on it."""
    server = await server_factory(max_message_bytes=MIB, max_pixels=500_000)
    async with AsyncClient(f"127.0.0.1:{server.port}") as client:
        style = await client.register_style(picture(64, 64, seed=70))
        yield server, client, style.id


async def test_the_sdk_learns_the_servers_limits(small) -> None:
    _, client, _ = small
    assert await client.limits() == Limits(max_message_bytes=MIB, max_pixels=500_000)


async def test_a_frame_over_the_servers_limit_is_refused_before_sending(small) -> None:
    server, client, style = small
    with pytest.raises(ResourceExhausted) as err:
        await client.stylize(picture(700, 600), style)  # 1.2 MiB of raw RGB24
    message = str(err.value)
    assert "the image is 1.2 MiB, over the 1.0 MiB a message may carry" in message
    assert "JPEG on the wire" in message and "scale it down" in message and "server's max_message_bytes" in message
    assert calls(server, STYLIZE_IMAGE) == 0  # nothing was sent
    jpeg = encoded(picture(700, 600), "JPEG", quality=90)  # what the message suggests goes through
    assert (await client.stylize(jpeg, style)).width == 700


async def test_a_raw_answer_over_the_limit_is_refused_before_sending(small) -> None:
    server, client, style = small
    jpeg = encoded(picture(700, 600), "JPEG", quality=90)
    with pytest.raises(ResourceExhausted, match=r"raw answer to the image \(700x600 RGB24\).*output='jpeg'"):
        await client.stylize(jpeg, style, output="raw")
    assert calls(server, STYLIZE_IMAGE) == 0


async def test_pixels_over_the_servers_limit_are_refused_before_sending(small) -> None:
    server, client, style = small
    with pytest.raises(InvalidArgument, match=r"800x700 = 0\.6 MP.*at most 0\.5 MP.*scale it down"):
        await client.stylize(np.zeros((700, 800), np.uint8), style)  # 0.53 MiB: fits, but too many pixels
    assert calls(server, STYLIZE_IMAGE) == 0


async def test_a_stream_frame_over_the_limit_ends_the_stream_with_the_reason(small) -> None:
    server, client, style = small
    frames = [picture(64, 48), picture(700, 600), picture(64, 48)]
    results = []
    with pytest.raises(ResourceExhausted, match=r"frame 1 is 1\.2 MiB.*JPEG on the wire"):
        async for result in client.stream(frames, style):
            results.append(result)
    assert [r.id for r in results] == [0]


async def test_the_clients_own_limit_names_the_client_option(server) -> None:
    async with AsyncClient(f"127.0.0.1:{server.port}", max_message_bytes=MIB) as client:
        style = await client.register_style(picture(64, 64, seed=71))
        with pytest.raises(ResourceExhausted, match=r"Client\(max_message_bytes=\.\.\.\)"):
            await client.stylize(picture(700, 600), style.id)


async def test_the_largest_raw_frame_the_sdk_allows_fits_the_wire_both_ways(small) -> None:
    """``max_raw_pixels`` is what travels: a frame of that size goes through as raw RGB24 and comes
    back raw; one row more is refused by the SDK, and gRPC would refuse it too."""
    _, client, style = small
    width = 512
    height = max_raw_pixels(MIB) // width
    result = await client.stylize(picture(width, height), style, output="raw")
    assert (result.width, result.height) == (width, height) and len(result.data) == width * height * 3
    assert width * (height + 1) * 3 > MIB  # the next row no longer fits a message at all
    with pytest.raises(ResourceExhausted):
        await client.stylize(picture(width, height + 1), style, output="raw")


def test_readme_states_the_raw_frame_limit_the_wire_allows() -> None:
    row = next(line for line in README.read_text().splitlines() if line.startswith("| message size"))
    default = ServerConfig().max_message_bytes
    assert f"{default // MIB} MiB" in row
    stated = re.search(r"([\d.]+) MP", row)
    assert stated and stated.group(1) == f"{max_raw_pixels(default) / 1e6:.1f}", row


async def test_a_stream_past_its_deadline_reports_deadline_exceeded(server_factory) -> None:
    """grpcio ends a stream whose deadline passes while a write waits on flow control with INTERNAL
    ("Internal error from Core"): a slow server (one worker, one queued frame) and a producer
    sending large raw frames without a window make that the usual case."""
    server = await server_factory(queue_depth=1, workers=1)
    big = picture(1024, 1024)
    async with AsyncClient(f"127.0.0.1:{server.port}") as client:
        style = await client.register_style(picture(64, 64, seed=72))

        async def flood():
            for _ in range(1000):
                yield big

        with pytest.raises(DeadlineExceeded):
            async for _ in client.stream(flood(), style.id, timeout=1.0, max_in_flight=None, process_max_side=1024):
                pass
