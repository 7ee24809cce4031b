"""Every resource bounded before work: output pixels and per-encoder limits, the answer's bytes
against the message limit (in-band, the stream goes on), the bytes a stream that is not read
may hold, stalled streams, the server-wide frame memory, process_max_side's ceiling.

(How fast refusals are and how much memory they save is measured by ``benchmarks/bounds.py``,
not asserted here.)"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from conftest import picture, raw_image, register, status_of

from stylecast.v1 import stylecast_pb2 as pb
from stylecast.v1 import stylecast_pb2_grpc as pb_grpc

RAW = pb.OutputOptions(encoding=pb.ENCODING_RAW_RGB24)


def stalled(server) -> float | None:
    return server.engine.metrics.registry.get_sample_value(
        "stylecast_stream_duration_seconds_count",
        {"method": "/stylecast.v1.StyleTransfer/Stylize", "code": "DEADLINE_EXCEEDED", "token": "anonymous"})


def buffered(server) -> float:
    return server.engine.metrics.registry.get_sample_value("stylecast_stream_buffered_bytes")


async def write_until_paused(call, server, frame: pb.Image, budget: int) -> tuple[asyncio.Future, int, float]:
    """Write frames to ``call`` (never read) until the server holds ``budget`` bytes and a write
    waits: its reading has paused.  A write that waits while the server holds less is only slow
    (a loaded machine), not paused: keep waiting for it.  (write still waiting, frames written, peak held)"""
    peak = 0.0
    for i in range(2000):
        write = asyncio.ensure_future(call.write(pb.StylizeRequest(frame=pb.Frame(id=i, image=frame))))
        waited = 0.0
        while not (await asyncio.wait((write,), timeout=0.5))[0]:
            if (held := buffered(server)) >= budget:
                return write, i, max(peak, held)
            waited += 0.5
            assert waited < 120, f"a write waited {waited:g} s while the server held {held} of {budget} bytes"
        peak = max(peak, buffered(server))
    raise AssertionError("the server kept reading a stream whose answers are not read")


async def test_output_limits_are_refused_before_work_with_what_to_ask_instead(server_factory):
    server = await server_factory(max_pixels=4_000_000, max_message_bytes=8 << 20)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.StyleTransferStub(channel)
        style = await register(stub, picture(64, 64))
        tiny = raw_image(picture(8, 8))

        def request(**output):
            return pb.StylizeImageRequest(config=pb.StreamConfig(style_id=style.id, output=pb.OutputOptions(**output)),
                                          image=tiny)

        cases = {
            "max_pixels": request(width=16384, height=16384, encoding=pb.ENCODING_RAW_RGB24),
            "16383 px a side": request(width=16384, height=8, encoding=pb.ENCODING_WEBP),
            "max_message_bytes": request(width=2000, height=1800, encoding=pb.ENCODING_RAW_RGB24),
        }
        for words, req in cases.items():
            code, details = await status_of(stub.StylizeImage(req))
            assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED), (words, code)
            assert words in details and "ask for" in details, details
        # one side given: the other follows the aspect, checked per frame before inference
        code, details = await status_of(stub.StylizeImage(request(width=17000, encoding=pb.ENCODING_WEBP)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "16383" in details
        code, details = await status_of(stub.StylizeImage(pb.StylizeImageRequest(
            config=pb.StreamConfig(style_id=style.id, process_max_side=4096), image=tiny)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "max_process_side" in details
        ok = await stub.StylizeImage(request(width=1000, height=1000, encoding=pb.ENCODING_WEBP))
        assert (ok.result.image.width, ok.result.image.height) == (1000, 1000)


async def test_a_frame_whose_answer_would_not_fit_gets_an_in_band_error_and_the_stream_goes_on(server_factory):
    server = await server_factory(max_message_bytes=4 << 20)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.StyleTransferStub(channel)
        style = await register(stub, picture(64, 64))
        big, small = picture(1400, 1000), picture(40, 30)   # raw answers: 4.2 MB (> 4 MiB) and 3.6 kB

        async def requests():
            yield pb.StylizeRequest(config=pb.StreamConfig(style_id=style.id, output=RAW, process_max_side=64))
            yield pb.StylizeRequest(frame=pb.Frame(id=1, image=pb.Image(data=big[:, :, 0].tobytes(),
                                                                         pixel_format=pb.PIXEL_FORMAT_GRAY8,
                                                                         width=1400, height=1000)))
            yield pb.StylizeRequest(frame=pb.Frame(id=2, image=raw_image(small)))

        answers = [a async for a in stub.Stylize(requests())]
    assert [a.WhichOneof("msg") for a in answers] == ["error", "frame"]
    assert answers[0].error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert "max_message_bytes" in answers[0].error.message
    assert (answers[1].frame.image.width, answers[1].frame.image.height) == (40, 30)


async def test_a_live_client_that_stops_reading_holds_bounded_memory_then_its_stream_ends(server_factory):
    """Its stream stops being read at the byte budget, new streams are refused while the server's
    frame memory is full, and the stall timeout ends it and frees everything.  The client keeps a
    64 KiB receive window (no BDP probing), so unread answers pile up on the server, not in the
    client's transport."""
    budget = 1 << 20
    # stall timeout 8 s: write_until_paused must see the server full before it gives up (3 s was
    # not always enough on a loaded machine)
    server = await server_factory(stream_buffer_bytes=budget, frame_memory_bytes=budget, stall_timeout_s=8.0,
                                  workers=1)
    frame = raw_image(picture(128, 128))                 # 49 kB in, 49 kB raw out
    options = [("grpc.http2.bdp_probe", 0)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=options) as channel:
        stub = pb_grpc.StyleTransferStub(channel)
        style = await register(stub, picture(64, 64))
        call = stub.Stylize()
        await call.write(pb.StylizeRequest(config=pb.StreamConfig(style_id=style.id, output=RAW,
                                                                  mode=pb.STREAM_MODE_LIVE)))
        # never read: the server must stop reading (flow control then holds the client's write)
        write, _, peak = await write_until_paused(call, server, frame, budget)
        peak = max(peak, buffered(server))
        assert budget <= peak <= budget + 2 * frame.ByteSize() + 1024, peak

        # it holds the server's whole frame memory now: a second stream is refused at once (the
        # refusal can end the call before its first write is out: that write then raises it)
        other = stub.Stylize()

        async def open_other() -> None:
            await other.write(pb.StylizeRequest(config=pb.StreamConfig(style_id=style.id)))
            await other.read()

        code, details = await status_of(open_other())
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "frame_memory_bytes" in details, details

        for _ in range(300):                              # stall_timeout_s: the server gives up ...
            if buffered(server) == 0:
                break
            await asyncio.sleep(0.1)
        assert buffered(server) == 0                      # ... and holds none of the stream's frames
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            while await call.read() is not grpc.aio.EOF:
                pass
        # What the server ended it with, from its own call metrics.  (The client usually reads the same;
        # grpcio may instead report INTERNAL "Internal error from Core" for its write still waiting
        # on flow control when the stream ends.)
        for _ in range(100):
            if stalled(server) == 1:
                break
            await asyncio.sleep(0.1)
        assert stalled(server) == 1
        if ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            assert "stall_timeout_s" in ended.value.details()
        write.cancel()
        ok = await stub.StylizeImage(pb.StylizeImageRequest(config=pb.StreamConfig(style_id=style.id, output=RAW),
                                                            image=raw_image(picture(16, 16))))
        assert ok.result.image.width == 16


async def test_shutdown_ends_a_stream_paused_at_its_byte_budget_after_answering_every_frame_it_read(server_factory):
    """A stream whose reading is paused at ``stream_buffer_bytes`` (its client stopped reading)
    still ends at shutdown: once the client reads again it gets one answer per frame the server
    read, in order, then UNAVAILABLE, and the server holds none of its bytes."""
    budget = 1 << 20
    server = await server_factory(stream_buffer_bytes=budget, workers=1)
    frame = raw_image(picture(128, 128))                 # 49 kB in, 49 kB raw out
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=[("grpc.http2.bdp_probe", 0)]) as channel:
        stub = pb_grpc.StyleTransferStub(channel)
        style = await register(stub, picture(64, 64))
        call = stub.Stylize()
        await call.write(pb.StylizeRequest(config=pb.StreamConfig(style_id=style.id, output=RAW,
                                                                  mode=pb.STREAM_MODE_LIVE)))
        write, i, _ = await write_until_paused(call, server, frame, budget)  # never read: it stops reading
        server.shutdown.set()
        ids = []
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            while (answer := await call.read()) is not grpc.aio.EOF:
                ids.append(getattr(answer, answer.WhichOneof("msg")).id)
        write.cancel()
        await asyncio.gather(write, return_exceptions=True)
    # The server held the whole budget, each read frame at most its bytes in plus its answer out.
    assert ids == list(range(len(ids))) and budget // (2 * frame.ByteSize()) <= len(ids) <= i, (len(ids), i)
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE and "shutting down" in ended.value.details()
    for _ in range(100):
        if buffered(server) == 0:
            break
        await asyncio.sleep(0.1)
    assert buffered(server) == 0


async def test_style_names_and_page_tokens_are_checked_and_pages_bounded_in_bytes(server):
    import base64

    from stylecast.client.cli import printable
    from stylecast.server.style_store import PAGE_BYTES, StyleRecord, bounded_page

    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.StyleTransferStub(channel)
        for name, words in (("x" * 257, "at most 256"), ("evil\x1b[2J", "control"), ("a\u202eb", "control")):
            code, details = await status_of(register(stub, picture(32, 32), name=name))
            assert code == grpc.StatusCode.INVALID_ARGUMENT and words in details, (name, details)
        assert (await register(stub, picture(32, 32), name="ünïcode ok")).name == "ünïcode ok"
        for token in (base64.urlsafe_b64encode(b"99999999999999999999999:x").decode(), "not base64!", "x" * 300,
                      base64.urlsafe_b64encode(b"-5:abc").decode()):
            code, _ = await status_of(stub.ListStyles(pb.ListStylesRequest(page_token=token)))
            assert code == grpc.StatusCode.INVALID_ARGUMENT, token
    records = [StyleRecord(f"{i:064x}", "n" * 256, i) for i in range(1000)]
    page, token = bounded_page(records, "")
    assert 1 <= len(page) < 1000 and token
    assert sum(len(r.id) + 4 * len(r.name) for r in page[:-1]) <= PAGE_BYTES
    assert bounded_page(records[:3], "next") == (records[:3], "next")
    assert printable("evil\x1b[2J\n") == "evil\\x1b[2J\\n"
