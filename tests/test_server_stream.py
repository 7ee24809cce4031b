"""Stylize streams through a real in-process server: ordering, modes, bad frames, config switches."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest
from conftest import decode_result, encoded, picture, raw_image, register

from stylecast.v1 import stylecast_pb2 as pb
from stylecast.v1 import stylecast_pb2_grpc as pb_grpc


def config(style_id: str, **kw) -> pb.StylizeRequest:
    return pb.StylizeRequest(config=pb.StreamConfig(style_id=style_id, **kw))


def frame(frame_id: int, image: pb.Image) -> pb.StylizeRequest:
    return pb.StylizeRequest(frame=pb.Frame(id=frame_id, image=image))


async def collect(call) -> list[pb.StylizeResponse]:
    return [r async for r in call]


SIZES = [(64, 48), (40, 72), (96, 64), (48, 48)]


async def test_every_frame_answers_each_id_once_in_order_across_streams(server, stub):
    assert server.engine.config.workers == 2
    style = await register(stub, picture(120, 90, seed=1))

    async def one_stream(seed: int) -> tuple[list[int], list[pb.StylizeResponse]]:
        ids = [seed * 1000 + i for i in range(24)]

        async def requests():
            yield config(style.id, output=pb.OutputOptions(encoding=pb.ENCODING_RAW_RGB24))
            for n, fid in enumerate(ids):
                w, h = SIZES[(n + seed) % len(SIZES)]
                img = picture(w, h, seed=n)
                yield frame(fid, raw_image(img) if n % 2 else pb.Image(data=encoded(img, "PNG")))

        return ids, await collect(stub.Stylize(requests()))

    results = await asyncio.gather(*(one_stream(s) for s in range(3)))
    for seed, (ids, responses) in enumerate(results):
        assert [r.frame.id for r in responses] == ids
        assert all(r.WhichOneof("msg") == "frame" for r in responses)
        for n, r in enumerate(responses):
            w, h = SIZES[(n + seed) % len(SIZES)]
            assert (r.frame.image.width, r.frame.image.height) == (w, h)
            assert decode_result(r.frame.image).shape == (h, w, 3)
            assert r.frame.backend == "litert" and r.frame.model == "tiny" and r.frame.model_version == "1"
            assert r.frame.timings.total_ms >= r.frame.timings.infer_ms > 0


async def test_same_frame_gives_same_output_whatever_else_is_in_flight(stub):
    style = await register(stub, picture(80, 80, seed=2))
    img = picture(64, 48, seed=5)

    async def requests():
        yield config(style.id, output=pb.OutputOptions(encoding=pb.ENCODING_RAW_RGB24))
        for i in range(8):
            yield frame(i, raw_image(img if i % 2 == 0 else picture(64, 48, seed=i)))

    out = [decode_result(r.frame.image) for r in await collect(stub.Stylize(requests()))]
    for i in (2, 4, 6):
        np.testing.assert_array_equal(out[i], out[0])
    assert not np.array_equal(out[1], out[0])


async def test_live_mode_drops_under_overload_and_answers_every_id(server_factory):
    server = await server_factory(workers=1, process_max_side=512)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.StyleTransferStub(channel)
        style = await register(stub, picture(80, 80, seed=3))
        big = raw_image(picture(512, 384, seed=4))
        n = 40

        async def requests():  # all frames at once: far faster than one worker stylizes 512x384
            yield config(style.id, mode=pb.STREAM_MODE_LIVE, output=pb.OutputOptions(encoding=pb.ENCODING_RAW_RGB24))
            for i in range(n):
                yield frame(i, big)

        responses = await collect(stub.Stylize(requests()))
    kinds = [r.WhichOneof("msg") for r in responses]
    ids = [getattr(r, k).id for r, k in zip(responses, kinds)]
    assert ids == list(range(n))
    assert kinds.count("dropped") > 0 and kinds.count("frame") > 0
    assert kinds[-1] == "frame"  # the newest frame always wins
    assert all(r.dropped.reason for r in responses if r.WhichOneof("msg") == "dropped")


async def test_bad_frames_answered_in_band_while_other_frames_and_streams_go_on(stub):
    style = await register(stub, picture(80, 80, seed=6))
    good = raw_image(picture(48, 32, seed=7))
    png = encoded(picture(48, 32, seed=8))
    bad = {
        1: pb.Image(data=png[: len(png) // 2]),                                            # truncated PNG
        2: pb.Image(data=b"not an image at all"),                                          # corrupt
        3: pb.Image(data=b""),                                                             # empty
        4: pb.Image(data=b"\0" * 10, pixel_format=pb.PIXEL_FORMAT_RGB24, width=4, height=4),   # wrong byte count
        5: pb.Image(data=b"", pixel_format=pb.PIXEL_FORMAT_RGB24, width=0, height=0),      # zero size
        6: pb.Image(data=b"\0" * 3, pixel_format=pb.PIXEL_FORMAT_RGB24, width=7000, height=7000),  # > max_pixels
    }

    async def bad_stream():
        yield config(style.id)
        for i in range(8):
            yield frame(i, bad.get(i, good))

    async def good_stream():
        yield config(style.id)
        for i in range(8):
            yield frame(100 + i, good)

    bad_out, good_out = await asyncio.gather(collect(stub.Stylize(bad_stream())), collect(stub.Stylize(good_stream())))
    assert [r.WhichOneof("msg") for r in good_out] == ["frame"] * 8
    assert [r.frame.id if r.HasField("frame") else r.error.id for r in bad_out] == list(range(8))
    for i, r in enumerate(bad_out):
        if i in bad:
            assert r.WhichOneof("msg") == "error", i
            assert r.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0], (i, r.error.message)
            assert r.error.message
        else:
            assert r.WhichOneof("msg") == "frame"
    assert "bytes" in bad_out[4].error.message and "MP" in bad_out[6].error.message


async def test_first_message_must_be_a_config(stub):
    async def requests():
        yield frame(1, raw_image(picture(16, 16)))

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await collect(stub.Stylize(requests()))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "StreamConfig" in err.value.details()


async def test_unknown_style_fails_the_rpc_after_answering_earlier_frames(stub):
    style = await register(stub, picture(80, 80, seed=9))

    async def requests():
        yield config(style.id)
        yield frame(1, raw_image(picture(32, 32)))
        yield config("no-such-style")
        yield frame(2, raw_image(picture(32, 32)))

    call = stub.Stylize(requests())
    first = await call.read()
    assert first.frame.id == 1
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call.read()
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no-such-style" in err.value.details()

    async def unknown_first():
        yield config("missing")

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await collect(stub.Stylize(unknown_first()))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_later_config_switches_style_and_output(stub):
    a = await register(stub, picture(80, 80, seed=10))
    b = await register(stub, picture(80, 80, seed=11))
    img = raw_image(picture(48, 32, seed=12))
    raw = pb.OutputOptions(encoding=pb.ENCODING_RAW_RGB24)

    async def requests():
        yield config(a.id, output=raw)
        yield frame(1, img)
        yield config(b.id, output=raw)
        yield frame(2, img)
        yield config(a.id, output=pb.OutputOptions(encoding=pb.ENCODING_PNG, width=96))
        yield frame(3, img)

    r1, r2, r3 = await collect(stub.Stylize(requests()))
    out1, out2 = decode_result(r1.frame.image), decode_result(r2.frame.image)
    assert not np.array_equal(out1, out2)
    assert r3.frame.image.pixel_format == pb.PIXEL_FORMAT_UNSPECIFIED
    assert decode_result(r3.frame.image).shape == (64, 96, 3)  # aspect kept from width alone


async def test_cancelled_stream_frees_its_queued_work(server, stub):
    style = await register(stub, picture(80, 80, seed=13))
    big = raw_image(picture(512, 512, seed=14))
    release = asyncio.Event()

    async def requests():
        yield config(style.id)
        for i in range(6):
            yield frame(i, big)
        await release.wait()

    call = stub.Stylize(requests())
    await call.read()
    call.cancel()
    release.set()
    # the server is free again: a fresh stream is answered promptly and fully
    async def small():
        yield config(style.id)
        for i in range(3):
            yield frame(i, raw_image(picture(32, 32, seed=i)))

    assert [r.frame.id for r in await collect(stub.Stylize(small()))] == [0, 1, 2]
    assert server.engine.slot.pending_frames == 0
