"""The SDK through a real in-process server: AsyncClient on the test loop, the blocking
Client on a worker thread (its private loop talks to the same server)."""

from __future__ import annotations

import asyncio
import io
import socket
import time

import numpy as np
import pytest
from conftest import encoded, picture
from PIL import Image

from stylecast.client import (AsyncClient, Client, InvalidArgument, NotFound, StreamOptions, StylecastError,
                              Unavailable)


@pytest.fixture
async def client(server):
    async with AsyncClient(f"127.0.0.1:{server.port}") as c:
        yield c


def target(server) -> str:
    return f"127.0.0.1:{server.port}"


async def test_register_is_chunked_and_idempotent_and_styles_round_trip(client, tmp_path) -> None:
    noisy = np.random.default_rng(0).integers(0, 256, (800, 700, 3), dtype=np.uint8)
    path = tmp_path / "noisy.png"
    Image.fromarray(noisy).save(path)
    assert path.stat().st_size > 1 << 20  # more than one 1 MiB upload chunk

    first = await client.register_style(path, name="noisy")
    again = await client.register_style(path.read_bytes(), name="noisy")
    assert first.created and not again.created and first.id == again.id and first.name == "noisy"
    smooth = await client.register_style(picture(90, 60, seed=1), name="smooth")  # ndarray → PNG upload
    pil = await client.register_style(Image.fromarray(picture(64, 64, seed=2)))
    assert len({first.id, smooth.id, pil.id}) == 3

    got = await client.get_style(smooth.id, thumbnail=True)
    assert got.name == "smooth" and got.created_at is not None
    assert Image.open(io.BytesIO(got.thumbnail_jpeg)).format == "JPEG"
    listed = [s.id async for s in client.list_styles(page_size=1)]  # three pages, fetched lazily
    assert sorted(listed) == sorted({first.id, smooth.id, pil.id})

    by_id = await client.search_styles(smooth, limit=3)  # the query style itself is left out
    assert {m.style.id for m in by_id} == {first.id, pil.id}
    by_image = await client.search_styles(image=picture(90, 60, seed=1), limit=3)
    assert [m.style.id for m in by_image][0] == smooth.id and len(by_image) == 3
    assert by_image[0].score == pytest.approx(1.0, abs=1e-3) and by_image[1].score < by_image[0].score

    assert await client.delete_style(pil.id) is True
    assert await client.delete_style(pil.id) is False
    with pytest.raises(NotFound, match=pil.id):
        await client.get_style(pil.id)


async def test_stylize_keeps_size_and_matches_the_stream(client) -> None:
    style = await client.register_style(picture(80, 80, seed=3))
    img = picture(70, 46, seed=4)
    jpeg = await client.stylize(encoded(img, "JPEG"), style)
    assert jpeg.ok and jpeg.format == "jpeg" and (jpeg.width, jpeg.height) == (70, 46)
    assert jpeg.to_array().shape == (46, 70, 3)
    assert jpeg.timings.infer_ms > 0 and jpeg.backend == "litert" and jpeg.model == "tiny"

    raw = await client.stylize(img, style, output="raw")
    streamed = [r async for r in client.stream([img], style, output="raw")]
    assert raw.format == "raw" and len(streamed) == 1
    np.testing.assert_array_equal(streamed[0].to_array(), raw.to_array())
    weaker = await client.stylize(img, style, output="raw", strength=0.0)
    assert not np.array_equal(weaker.to_array(), raw.to_array())


async def test_stream_window_bounds_unanswered_frames(client) -> None:
    style = await client.register_style(picture(80, 80, seed=5))
    produced = 0

    async def frames():
        nonlocal produced
        for i in range(20):
            produced += 1
            yield picture(64, 48, seed=i)

    ahead = []
    async for r in client.stream(frames(), style, output="raw", max_in_flight=2):
        ahead.append(produced - r.id)
    assert len(ahead) == 20
    # frames sent and unanswered ≤ 2, plus the one the producer has handed over and waits to send
    assert max(ahead) <= 3
    unbounded = []
    produced = 0
    async for r in client.stream(frames(), style, output="raw", max_in_flight=None):
        # Without the window the producer runs ahead on flow control alone: while the first answer
        # waits here unconsumed, it goes on handing frames over (up to what the server admits and
        # the transport windows hold; 8 fit).  Waiting for it, not racing it, keeps this load-proof.
        if r.id == 0:
            deadline = time.monotonic() + 30
            while produced < 8 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
        unbounded.append(produced - r.id)
    assert max(unbounded) > 3


async def test_stream_answers_in_order_with_options_switch_and_in_band_errors(client) -> None:
    a = await client.register_style(picture(80, 80, seed=5))
    b = await client.register_style(picture(80, 80, seed=6))
    sizes = [(64, 48), (40, 72), (96, 64), (48, 48)]
    same = picture(48, 32, seed=7)

    async def frames():
        for i in range(12):
            w, h = sizes[i % len(sizes)]
            yield picture(w, h, seed=i) if i % 2 else encoded(picture(w, h, seed=i))
        yield same
        yield b"definitely not an image"
        yield StreamOptions(b, output="raw")
        yield same

    results = [r async for r in client.stream(frames(), a, output="raw")]
    assert [r.id for r in results] == list(range(15))
    for i, r in enumerate(results[:12]):
        assert r.ok and (r.width, r.height) == sizes[i % len(sizes)]
        assert r.latency_ms is not None and r.latency_ms > 0
    assert results[13].status == "error" and isinstance(results[13].error, InvalidArgument)
    with pytest.raises(InvalidArgument):
        results[13].raise_for_status()
    assert not np.array_equal(results[12].to_array(), results[14].to_array())  # style b from frame 14 on


async def test_rpc_failures_raise_typed_exceptions(client) -> None:
    with pytest.raises(NotFound, match="no-such-style"):
        await client.stylize(picture(32, 32), "no-such-style")
    with pytest.raises(NotFound):
        [r async for r in client.stream([picture(32, 32)], "no-such-style")]
    style = await client.register_style(picture(80, 80, seed=8))
    with pytest.raises(InvalidArgument):
        await client.stylize(b"\x89PNG broken", style)
    with pytest.raises(InvalidArgument, match="model"):
        await client.stylize(picture(32, 32), style, model="other-model")

    def producer():
        yield picture(32, 32)
        raise RuntimeError("camera unplugged")

    with pytest.raises(RuntimeError, match="camera unplugged"):
        [r async for r in client.stream(producer(), style)]
    with pytest.raises(ValueError, match="mode"):
        [r async for r in client.stream([], style, mode="sometimes")]


async def test_unreachable_server_is_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before anyone connects
    async with AsyncClient(f"127.0.0.1:{port}", timeout=5) as dead:
        with pytest.raises(Unavailable):
            await dead.wait_ready(timeout=0.5)
        with pytest.raises(Unavailable):
            await dead.get_style("x")


async def test_live_mode_answers_every_frame_ok_or_dropped(server_factory) -> None:
    server = await server_factory(workers=1)
    async with AsyncClient(target(server)) as client:
        style = await client.register_style(picture(80, 80, seed=9))
        big = picture(512, 384, seed=10)
        results = [r async for r in client.stream([big] * 30, style, mode="live", output="raw")]
    assert [r.id for r in results] == list(range(30))
    assert {r.status for r in results} == {"ok", "dropped"}
    assert results[-1].ok
    dropped = next(r for r in results if r.status == "dropped")
    assert dropped.drop_reason
    with pytest.raises(StylecastError, match="dropped"):
        dropped.to_array()


async def test_blocking_client_shares_the_implementation(server) -> None:
    def body() -> None:
        with Client(target(server)) as client:
            client.wait_ready()
            style = client.register_style(picture(80, 80, seed=11), name="sync")
            assert [s.id for s in client.list_styles()] == [style.id]
            result = client.stylize(picture(50, 30, seed=12), style)
            assert result.to_array().shape == (30, 50, 3)

            def frames():  # a plain generator: pulled on a worker thread
                for i in range(6):
                    yield picture(40, 24, seed=i)

            results = list(client.stream(frames(), style, output="raw"))
            assert [r.id for r in results] == list(range(6)) and all(r.ok for r in results)

            stream = client.stream(frames(), style)
            assert next(stream).id == 0
            stream.close()  # abandoning a stream cancels it; the client stays usable
            assert client.get_style(style.id).name == "sync"
            with pytest.raises(NotFound):
                client.get_style("missing")
            assert client.delete_style(style.id)
        with pytest.raises(RuntimeError, match="closed"):
            client.get_style(style.id)

    await asyncio.wait_for(asyncio.to_thread(body), 120)
