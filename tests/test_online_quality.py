"""Online quality: sampled frames are scored off the serving path and exported by model version.

The built-in model serves a short stream with every frame sampled; the histograms on /metrics
must hold exactly the scores the same measures give for the answered frames."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest
from conftest import CHANNEL_OPTIONS, decode_result, free_port, picture, raw_image, register, running_servers
from test_metrics import scrape, value

from stylecast.backends.base import BackendOptions, create_backend
from stylecast.backends.package import locate_package
from stylecast.model import BUILTIN_DIR
from stylecast.server.online_quality import MIN_STYLES, content_ssim, style_score
from stylecast.v1 import stylecast_pb2 as pb
from stylecast.v1 import stylecast_pb2_grpc as pb_grpc

MODEL = "stylecast-small"
VERSION = locate_package(BUILTIN_DIR, MODEL).version  # the version served by default (the latest)


@pytest.fixture
async def builtin_server(tmp_path):
    async with running_servers(BUILTIN_DIR, tmp_path) as start_server:
        yield lambda **overrides: start_server(**({"model": MODEL, "metrics_port": free_port()} | overrides))


async def stylize_stream(stub, style_id: str, frames: list[np.ndarray]) -> list[np.ndarray]:
    async def requests():
        yield pb.StylizeRequest(config=pb.StreamConfig(style_id=style_id, output=pb.OutputOptions(
            encoding=pb.ENCODING_RAW_RGB24)))
        for i, img in enumerate(frames):
            yield pb.StylizeRequest(frame=pb.Frame(id=i, image=raw_image(img)))

    answers = [r async for r in stub.Stylize(requests())]
    assert [r.WhichOneof("msg") for r in answers] == ["frame"] * len(frames)
    return [decode_result(r.frame.image) for r in answers]


async def scored(server, outcome: str = "scored") -> float:
    return server.engine.metrics.registry.get_sample_value(
        "stylecast_quality_samples_total", {"model": MODEL, "version": VERSION, "outcome": outcome}) or 0.0


async def test_sampled_frames_get_style_and_content_scores_by_version_on_metrics(builtin_server):
    server = await builtin_server(quality_sample_every=1)
    frames = [picture(96, 64, seed=40 + i) for i in range(3)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=CHANNEL_OPTIONS) as channel:
        stub = pb_grpc.StyleTransferStub(channel)
        styles = [await register(stub, picture(128, 128, seed=10 + i)) for i in range(MIN_STYLES)]
        outputs = []
        for frame in frames:  # one frame per stream: the scorer keeps up, nothing is dropped
            outputs += await stylize_stream(stub, styles[0].id, [frame])
            while await scored(server) + await scored(server, "dropped") < len(outputs):
                await asyncio.sleep(0.02)
        samples = await scrape(server.metrics_endpoint.port)
        ids, matrix = await server.engine.styles.store.vectors(MODEL, VERSION)
    assert await scored(server, "dropped") == 0 and await scored(server, "failed") == 0
    # the same measures, with the model's own predictor (fp32, as served), on the answered frames
    predictor = create_backend("litert")
    predictor.load(locate_package(BUILTIN_DIR, MODEL), BackendOptions(format="tflite-fp32", threads=1))
    try:
        requested = matrix[ids.index(styles[0].id)]
        expected_style = [style_score(predictor.predict_style, out, requested, matrix.mean(0)) for out in outputs]
    finally:
        predictor.close()
    expected_ssim = [content_ssim(f, out) for f, out in zip(frames, outputs)]
    expected_style = [max(0.0, s) for s in expected_style]  # recorded clamped to [0, 1]
    labels = dict(model=MODEL, version=VERSION)
    assert value(samples, "stylecast_quality_style_score_count", **labels) == len(frames)
    assert value(samples, "stylecast_quality_content_ssim_count", **labels) == len(frames)
    assert value(samples, "stylecast_quality_style_score_sum", **labels) == pytest.approx(sum(expected_style), abs=1e-3)
    assert value(samples, "stylecast_quality_content_ssim_sum", **labels) == pytest.approx(sum(expected_ssim), abs=1e-6)
    assert all(0 <= s <= 1 for s in expected_style) and all(0 < s < 1 for s in expected_ssim)
    assert value(samples, "stylecast_quality_content_ssim_bucket", le="1.0", **labels) == len(frames)


async def test_without_enough_styles_for_a_centre_only_content_is_scored(builtin_server):
    server = await builtin_server(quality_sample_every=2)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=CHANNEL_OPTIONS) as channel:
        stub = pb_grpc.StyleTransferStub(channel)
        style = await register(stub, picture(128, 128, seed=10))
        await stylize_stream(stub, style.id, [picture(64, 64, seed=i) for i in range(4)])  # frames 2 and 4 sampled
        while await scored(server) + await scored(server, "dropped") < 2:
            await asyncio.sleep(0.02)
        samples = await scrape(server.metrics_endpoint.port)
    labels = dict(model=MODEL, version=VERSION)
    content_scored = await scored(server)
    assert content_scored >= 1, "neither sampled frame was scored"  # 2 samples: the 4-deep queue drops none
    assert value(samples, "stylecast_quality_content_ssim_count", **labels) == content_scored
    assert value(samples, "stylecast_quality_style_score_count", **labels) == 0  # created at load, never observed


async def test_sampling_off_scores_nothing(builtin_server):
    server = await builtin_server(quality_sample_every=0)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=CHANNEL_OPTIONS) as channel:
        stub = pb_grpc.StyleTransferStub(channel)
        style = await register(stub, picture(128, 128, seed=10))
        await stylize_stream(stub, style.id, [picture(64, 64, seed=1)] * 3)
    assert await scored(server) == 0 and server.engine.quality._task is None


async def test_frames_too_thin_for_ssim_are_counted_skipped_without_a_traceback(builtin_server, caplog):
    server = await builtin_server(quality_sample_every=1)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=CHANNEL_OPTIONS) as channel:
        stub = pb_grpc.StyleTransferStub(channel)
        style = await register(stub, picture(128, 128, seed=10))
        await stylize_stream(stub, style.id, [picture(400, 1, seed=1), picture(1, 300, seed=2)])
        await stylize_stream(stub, style.id, [picture(64, 64, seed=3)])
        while await scored(server) + await scored(server, "dropped") < 1:
            await asyncio.sleep(0.02)
    assert await scored(server, "skipped") == 2 and await scored(server, "failed") == 0
    assert "online quality" not in caplog.text
