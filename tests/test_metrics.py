"""Metrics through a real in-process server: what /metrics reports after real calls."""

from __future__ import annotations

import asyncio
import socket
import urllib.request

import grpc
import pytest
from conftest import CHANNEL_OPTIONS, encoded, picture, raw_image, register
from prometheus_client.parser import text_string_to_metric_families

from stylecast.server.codecs import ImageInput
from stylecast.server.errors import InvalidArgument
from stylecast.server.metrics import STAGES
from stylecast.server.session import FrameTrace, OutputSpec, StyleSpec
from stylecast.v1 import stylecast_pb2 as pb
from stylecast.v1 import stylecast_pb2_grpc as pb_grpc

STYLIZE = "/stylecast.v1.StyleTransfer/Stylize"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def scrape_text(port: int) -> str:
    """The page at http://127.0.0.1:port/metrics (fetched off the event loop)."""
    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            return resp.read().decode()

    return await asyncio.to_thread(get)


async def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """Every sample on the metrics page as {(name, sorted labels): value}."""
    text = await scrape_text(port)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def value(samples: dict, name: str, **labels) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


async def scrape_until(port: int, name: str, **labels) -> dict[tuple[str, tuple], float]:
    """The page once it has the sample ``name{labels}`` (the server records a call's metrics after
    its status is sent, so the client can see the status first); the last page after 10 s."""
    for _ in range(100):
        samples = await scrape(port)
        if value(samples, name, **labels) is not None:
            break
        await asyncio.sleep(0.1)
    return samples


async def stream(stub, style_id: str, images: list[pb.Image], mode=pb.STREAM_MODE_EVERY_FRAME) -> list:
    async def requests():
        yield pb.StylizeRequest(config=pb.StreamConfig(style_id=style_id, mode=mode))
        for i, img in enumerate(images):
            yield pb.StylizeRequest(frame=pb.Frame(id=i, image=img))

    return [r async for r in stub.Stylize(requests())]


async def test_metrics_page_counts_frames_stages_calls_and_model(server_factory):
    server = await server_factory(metrics_port=free_port())
    port = server.metrics_endpoint.port
    before = await scrape(port)
    assert value(before, "stylecast_model_ready", model="tiny", backend="litert") == 1
    assert value(before, "stylecast_model_info", model="tiny", version="1", backend="litert",
                 format="tflite-fp32") == 1
    assert value(before, "stylecast_model_load_progress_ratio", model="tiny", backend="litert") == 1
    assert value(before, "stylecast_model_load_duration_seconds_count", model="tiny", backend="litert") == 1
    assert value(before, "stylecast_styles") == 0
    assert value(before, "stylecast_backend_host_memory_estimate_bytes", backend="litert") is not None
    assert value(before, "process_resident_memory_bytes") > 0

    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=CHANNEL_OPTIONS) as channel:
        stub = pb_grpc.StyleTransferStub(channel)
        style = await register(stub, picture(96, 96, seed=1))
        good = [raw_image(picture(64, 48, seed=i)) for i in range(6)]
        bad = pb.Image(data=b"not an image")
        responses = await stream(stub, style.id, good[:3] + [bad] + good[3:])
        assert [r.WhichOneof("msg") for r in responses] == ["frame"] * 3 + ["error"] + ["frame"] * 3
        try:
            await stub.GetStyle(pb.GetStyleRequest(id="no-such-style"))
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.NOT_FOUND
        after = await scrape_until(port, "stylecast_rpc_duration_seconds_count",
                                   method="/stylecast.v1.StyleTransfer/GetStyle", code="NOT_FOUND", token="anonymous")

    assert value(after, "stylecast_frames_total", outcome="ok", backend="litert") == 6
    assert value(after, "stylecast_frames_total", outcome="error", backend="litert") == 1
    for stage in STAGES:
        assert value(after, "stylecast_frame_latency_seconds_count", stage=stage, backend="litert") == 6
        assert value(after, "stylecast_frame_latency_seconds_sum", stage=stage, backend="litert") > 0
    total = value(after, "stylecast_frame_latency_seconds_sum", stage="total", backend="litert")
    assert total >= value(after, "stylecast_frame_latency_seconds_sum", stage="infer", backend="litert")
    assert value(after, "stylecast_batch_size_frames_count", backend="litert") == 6  # max_batch 1
    assert value(after, "stylecast_styles") == 1
    assert value(after, "stylecast_queued_frames") == 0
    rpc = "stylecast_rpc_duration_seconds_count"
    assert value(after, rpc, method="/stylecast.v1.StyleTransfer/RegisterStyle", code="OK", token="anonymous") == 1
    assert value(after, rpc, method="/stylecast.v1.StyleTransfer/GetStyle", code="NOT_FOUND", token="anonymous") == 1
    assert value(after, "stylecast_stream_duration_seconds_count", method=STYLIZE, code="OK", token="anonymous") == 1
    assert value(after, "stylecast_active_streams", method=STYLIZE) == 0
    # Only bounded labels: no frame or stream ids anywhere.
    assert all(k != "id" for _, labels in after for k, _ in labels)


async def test_live_drops_and_aborted_streams_are_counted(server_factory):
    server = await server_factory(metrics_port=free_port(), workers=1, process_max_side=512)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=CHANNEL_OPTIONS) as channel:
        stub = pb_grpc.StyleTransferStub(channel)
        style = await register(stub, picture(80, 80, seed=3))
        big = raw_image(picture(512, 384, seed=4))
        responses = await stream(stub, style.id, [big] * 30, mode=pb.STREAM_MODE_LIVE)
        kinds = [r.WhichOneof("msg") for r in responses]
        try:  # a stream whose first message is not a StreamConfig is aborted
            await stub.Stylize(iter([pb.StylizeRequest(frame=pb.Frame(id=1, image=big))])).read()
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
        samples = await scrape(server.metrics_endpoint.port)
    assert kinds.count("dropped") > 0, "the LIVE burst should overload one worker"
    assert value(samples, "stylecast_frames_total", outcome="dropped", backend="litert") == kinds.count("dropped")
    assert value(samples, "stylecast_frames_total", outcome="ok", backend="litert") == kinds.count("frame")
    stream_count = "stylecast_stream_duration_seconds_count"
    assert value(samples, stream_count, method=STYLIZE, code="OK", token="anonymous") == 1
    assert value(samples, stream_count, method=STYLIZE, code="INVALID_ARGUMENT", token="anonymous") == 1


async def test_servers_in_one_process_keep_separate_metrics_and_unload_removes_version(server_factory):
    first = await server_factory(metrics_port=free_port())
    second = await server_factory(metrics_port=free_port())
    async with grpc.aio.insecure_channel(f"127.0.0.1:{first.port}", options=CHANNEL_OPTIONS) as channel:
        stub = pb_grpc.StyleTransferStub(channel)
        style = await register(stub, picture(64, 64, seed=5))
        await stream(stub, style.id, [raw_image(picture(32, 32, seed=i)) for i in range(3)])
    a, b = await scrape(first.metrics_endpoint.port), await scrape(second.metrics_endpoint.port)
    assert value(a, "stylecast_frames_total", outcome="ok", backend="litert") == 3
    assert value(b, "stylecast_frames_total", outcome="ok", backend="litert") is None
    assert value(b, "process_resident_memory_bytes") > 0

    registry = first.engine.metrics.registry
    labels = dict(model="tiny", version="1", backend="litert", format="tflite-fp32")
    assert registry.get_sample_value("stylecast_model_info", labels) == 1
    await first.stop(1.0)
    assert registry.get_sample_value("stylecast_model_info", labels) is None
    assert registry.get_sample_value("stylecast_model_ready", dict(model="tiny", backend="litert")) == 0
    assert registry.get_sample_value("stylecast_backend_host_memory_estimate_bytes", dict(backend="litert")) is None


async def test_a_frame_is_labelled_with_the_backend_it_ran_on(server_factory):
    """A frame's trace names the backend of the model it leased; one that failed before leasing
    one is counted under the backend that would have run it (the serving one)."""
    server = await server_factory(metrics_port=free_port())
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=CHANNEL_OPTIONS) as channel:
        stub = pb_grpc.StyleTransferStub(channel)
        style = await register(stub, picture(64, 64, seed=5))
        session = await server.engine.sessions.open(StyleSpec(((style.id, 1.0),)), OutputSpec("raw"), 0, "",
                                                    server.engine.sessions.assign())
        failed, ran = FrameTrace(), FrameTrace()
        with pytest.raises(InvalidArgument):
            await session.process(ImageInput(b"not an image"), failed)
        img = picture(48, 32, seed=6)
        res = await session.process(ImageInput(img.tobytes(), "rgb24", 48, 32), ran)
        responses = await stream(stub, style.id, [pb.Image(data=b"not an image"), raw_image(img)])
        samples = await scrape(server.metrics_endpoint.port)
    assert failed.backend == "" and ran.backend == res.backend == server.engine.slot.backend_name == "litert"
    assert [r.WhichOneof("msg") for r in responses] == ["error", "frame"]
    assert value(samples, "stylecast_frames_total", outcome="error", backend="litert") == 1
    assert value(samples, "stylecast_frames_total", outcome="ok", backend=responses[1].frame.backend) == 1


async def test_a_cancelled_stream_is_counted_cancelled_with_its_unanswered_frames(server_factory):
    """A client reads one answer and cancels: the stream is CANCELLED, and each frame the server
    read is counted once, ok only if its answer was written, cancelled otherwise."""
    server = await server_factory(metrics_port=free_port(), workers=1, process_max_side=1024)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=CHANNEL_OPTIONS) as channel:
        stub = pb_grpc.StyleTransferStub(channel)
        style = await register(stub, picture(80, 80, seed=6))
        # small messages (all read at once), slow frames (1024² inference on one worker)
        frames = [pb.Image(data=encoded(picture(1024, 1024, seed=i), "JPEG", quality=50)) for i in range(6)]

        async def requests():
            yield pb.StylizeRequest(config=pb.StreamConfig(style_id=style.id))
            for i, img in enumerate(frames):
                yield pb.StylizeRequest(frame=pb.Frame(id=i, image=img))

        call = stub.Stylize(requests())
        assert (await call.read()).frame.id == 0
        call.cancel()
        for _ in range(600):  # the server notices the cancellation asynchronously
            samples = await scrape(server.metrics_endpoint.port)
            if value(samples, "stylecast_active_streams", method=STYLIZE) == 0:
                break
            await asyncio.sleep(0.1)
    count = "stylecast_stream_duration_seconds_count"
    assert value(samples, count, method=STYLIZE, code="CANCELLED", token="anonymous") == 1
    assert value(samples, count, method=STYLIZE, code="OK", token="anonymous") is None
    ok = value(samples, "stylecast_frames_total", outcome="ok", backend="litert")
    cancelled = value(samples, "stylecast_frames_total", outcome="cancelled", backend="litert")
    assert ok >= 1 and cancelled >= 1 and ok + cancelled == len(frames)
    assert value(samples, "stylecast_frames_total", outcome="error", backend="litert") == 0


async def test_answers_over_the_message_limit_are_refused_and_counted_so(server_factory):
    """A unary answer the server cannot send is RESOURCE_EXHAUSTED with what to do (not gRPC's
    "Sent message larger than max" after a call counted OK); in a stream it is that frame's error."""
    server = await server_factory(metrics_port=free_port(), max_message_bytes=1 << 20)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=CHANNEL_OPTIONS) as channel:
        stub = pb_grpc.StyleTransferStub(channel)
        style = await register(stub, picture(80, 80, seed=7))
        big = pb.Image(data=encoded(picture(700, 600, seed=8), "JPEG"))  # 1.2 MiB as raw RGB24
        raw = pb.OutputOptions(encoding=pb.ENCODING_RAW_RGB24)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.StylizeImage(pb.StylizeImageRequest(config=pb.StreamConfig(style_id=style.id, output=raw),
                                                           image=big))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "JPEG or PNG output" in err.value.details() and "max_message_bytes" in err.value.details()

        async def requests():
            yield pb.StylizeRequest(config=pb.StreamConfig(style_id=style.id, output=raw))
            yield pb.StylizeRequest(frame=pb.Frame(id=0, image=big))
            yield pb.StylizeRequest(frame=pb.Frame(id=1, image=raw_image(picture(32, 32))))

        responses = [r async for r in stub.Stylize(requests())]
        assert [r.WhichOneof("msg") for r in responses] == ["error", "frame"]  # the stream goes on
        assert responses[0].error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]

        # an encoded answer's size is known only once encoded: refused after the work, still truthfully
        png = pb.OutputOptions(encoding=pb.ENCODING_PNG, width=2400, height=2000)
        small = raw_image(picture(120, 100, seed=9))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.StylizeImage(pb.StylizeImageRequest(config=pb.StreamConfig(style_id=style.id, output=png),
                                                           image=small))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "JPEG or PNG" in err.value.details()

        async def png_requests():
            yield pb.StylizeRequest(config=pb.StreamConfig(style_id=style.id, output=png))
            yield pb.StylizeRequest(frame=pb.Frame(id=0, image=small))

        responses = [r async for r in stub.Stylize(png_requests())]
        assert [r.WhichOneof("msg") for r in responses] == ["error"]
        assert "max_message_bytes" in responses[0].error.message
        samples = await scrape(server.metrics_endpoint.port)
    rpc = "stylecast_rpc_duration_seconds_count"
    assert value(samples, rpc, method="/stylecast.v1.StyleTransfer/StylizeImage", code="RESOURCE_EXHAUSTED",
                 token="anonymous") == 2
    assert value(samples, rpc, method="/stylecast.v1.StyleTransfer/StylizeImage", code="OK",
                 token="anonymous") is None
    assert value(samples, "stylecast_frames_total", outcome="error", backend="litert") == 2
    assert value(samples, "stylecast_frames_total", outcome="ok", backend="litert") == 1


async def test_a_stream_past_its_deadline_is_counted_deadline_exceeded(server_factory):
    server = await server_factory(metrics_port=free_port(), workers=1, process_max_side=1024)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=CHANNEL_OPTIONS) as channel:
        stub = pb_grpc.StyleTransferStub(channel)
        style = await register(stub, picture(80, 80, seed=9))
        frame = pb.Image(data=encoded(picture(1024, 1024, seed=10), "JPEG", quality=50))

        async def requests():
            yield pb.StylizeRequest(config=pb.StreamConfig(style_id=style.id))
            for i in range(20):
                yield pb.StylizeRequest(frame=pb.Frame(id=i, image=frame))
            await asyncio.Event().wait()  # never half-closes: the deadline ends it on any machine

        with pytest.raises(grpc.aio.AioRpcError) as err:
            [r async for r in stub.Stylize(requests(), timeout=0.5)]
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        for _ in range(600):  # the server notices the deadline asynchronously
            samples = await scrape(server.metrics_endpoint.port)
            if value(samples, "stylecast_active_streams", method=STYLIZE) == 0:
                break
            await asyncio.sleep(0.1)
    count = "stylecast_stream_duration_seconds_count"
    codes = {dict(labels)["code"]: v for (name, labels), v in samples.items() if name == count}
    assert codes == {"DEADLINE_EXCEEDED": 1}
    assert value(samples, "stylecast_frames_total", outcome="cancelled", backend="litert") >= 1
