"""Hot swap: a new version uploaded, loaded and swapped in while a stream runs, without a
lost, failed or reordered frame; progressive start swaps int8 → fp32 the same way."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from conftest import CHANNEL_OPTIONS, decode_result, picture, psnr, raw_image, register
from PIL import Image

from stylecast.backends.base import BackendOptions, create_backend
from stylecast.backends.package import load_package
from stylecast.client import AsyncClient
from stylecast.model.preprocess import style_image_uint8, to_float, to_uint8
from stylecast.v1 import stylecast_pb2 as pb
from stylecast.v1 import stylecast_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration
PROGRESSIVE = "litert:tflite-int8,litert:tflite-fp32"


async def watch_until_settled(client: AsyncClient, name: str = "", version: str = ""):
    last = None
    async for info in client.watch_model(name, version):
        last = info
    return last


def swaps_metric(server) -> float | None:
    return server.engine.metrics.registry.get_sample_value(
        "stylecast_model_swaps_total", {"model": "tiny", "backend": "litert"})


async def test_progressive_start_serves_int8_then_swaps_in_fp32(server_factory):
    server = await server_factory(load_order=PROGRESSIVE)
    async with AsyncClient(f"127.0.0.1:{server.port}") as client:
        last = await watch_until_settled(client)
        states = {a.format: (a.state, a.backend) for a in last.artifacts}
        assert states["tflite-fp32"] == ("active", "litert")
        assert states["tflite-int8"][0] == "available"
        assert last.swaps == 1 and last.active.load_seconds > 0
        style = await client.register_style(picture(64, 64, seed=2))
        result = await client.stylize(picture(40, 40), style)
    assert (result.backend, result.model, result.model_version) == ("litert", "tiny", "1")
    assert swaps_metric(server) == 1
    assert server.engine.slot.model.format == "tflite-fp32"


async def test_new_version_swaps_in_mid_stream_without_losing_or_reordering_frames(server_factory, tiny_v2_dir):
    server = await server_factory(load_order=PROGRESSIVE, queue_depth=4)
    target = f"127.0.0.1:{server.port}"
    async with AsyncClient(target) as client, grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        await watch_until_settled(client)  # start-up upgrade done: v1 fp32 serving
        stub = pb_grpc.StyleTransferStub(channel)
        before = await register(stub, picture(96, 80, seed=11), name="before-swap")
        frames = [picture(48, 40, seed=100 + i) for i in range(8)]
        stop = asyncio.Event()
        sent: list[int] = []

        async def requests():
            yield pb.StylizeRequest(config=pb.StreamConfig(style_id=before.id, output=pb.OutputOptions(
                encoding=pb.ENCODING_RAW_RGB24)))
            i, more = 0, 10
            while more:  # frames flow during the whole swap, then ten more
                sent.append(i)
                yield pb.StylizeRequest(frame=pb.Frame(id=i, image=raw_image(frames[i % len(frames)])))
                i += 1
                more -= stop.is_set()
                await asyncio.sleep(0.005)

        answers: list[pb.StylizeResponse] = []

        async def read_all():
            async for response in stub.Stylize(requests()):
                answers.append(response)

        reader = asyncio.create_task(read_all())
        while len(answers) < 5:  # the stream is running on v1
            await asyncio.sleep(0.01)
        uploaded = await client.upload_model(tiny_v2_dir / "tiny" / "2")
        assert uploaded.complete and uploaded.total_chunks >= 4
        loaded = await client.load_model("tiny", "2")
        assert (loaded.version, loaded.active.format) == ("2", "tflite-int8")  # first in the load order
        settled = await watch_until_settled(client, "tiny", "2")
        stop.set()
        await asyncio.wait_for(reader, 120)

        ids = [getattr(r, r.WhichOneof("msg")).id for r in answers]
        assert ids == sent == list(range(len(sent))), "every frame answered exactly once, in send order"
        assert {r.WhichOneof("msg") for r in answers} == {"frame"}, "no frame failed or was dropped"
        versions = [r.frame.model_version for r in answers]
        assert versions[0] == "1" and versions[-1] == "2"
        assert versions == sorted(versions), "no v1 answer after a v2 one: the swap is one switch"
        assert versions.count("2") >= 10  # the frames sent after the swap all ran on v2
        assert {(r.frame.model_version, r.frame.backend) for r in answers} <= {("1", "litert"), ("2", "litert")}

        # the style registered before the swap works after it, with v2's own vector
        got = await stub.GetStyle(pb.GetStyleRequest(id=before.id))
        assert {"tiny:1", "tiny:2"} <= set(got.model_versions)
        content = picture(48, 40, seed=7)
        res = await stub.StylizeImage(pb.StylizeImageRequest(
            config=pb.StreamConfig(style_id=before.id, output=pb.OutputOptions(encoding=pb.ENCODING_RAW_RGB24)),
            image=raw_image(content)))
        assert (res.result.model_version, server.engine.slot.model.format) == ("2", "tflite-fp32")
        served = decode_result(res.result.image)

        # ListModels and the metrics show the swap
        models = {(m.name, m.version): m for m in await client.list_models()}
        assert models[("tiny", "2")].state == "active" and models[("tiny", "2")].uploaded
        assert models[("tiny", "2")].active.format == "tflite-fp32" and models[("tiny", "2")].swaps == 2
        assert models[("tiny", "1")].state == "available" and models[("tiny", "1")].active is None
        assert settled.swaps == 2
    registry = server.engine.metrics.registry
    assert swaps_metric(server) == 3  # v1 int8→fp32 at start, v1→v2 int8, v2 int8→fp32
    assert registry.get_sample_value("stylecast_model_info", dict(
        model="tiny", version="2", backend="litert", format="tflite-fp32")) == 1
    assert registry.get_sample_value("stylecast_model_info", dict(
        model="tiny", version="1", backend="litert", format="tflite-fp32")) is None
    assert server.engine.slot.pending_frames == 0

    # what the server answered is v2 itself (not v1 with a stale vector)
    package = load_package(server.engine.registry.installed("tiny", "2"))
    backend = create_backend("litert")
    backend.load(package, BackendOptions(format="tflite-fp32", threads=1))
    try:
        normalised = style_image_uint8(Image.fromarray(picture(96, 80, seed=11)))
        vector = backend.predict_style(to_float(normalised[None]))
        direct = backend.stylize(to_float(content[None]), vector)[0]
    finally:
        backend.close()
    assert psnr(served, to_uint8(direct)) > 35
