"""A/B tests: two versions of the built-in model loaded at once behind a traffic split.

Both versions are copies of the built-in package (tflite-fp32 only) under different version
numbers in a tmp models folder, served by a real in-process server with the real backends."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import shutil
from pathlib import Path

import grpc
import pytest
from conftest import CHANNEL_OPTIONS, free_port, make_config, picture, raw_image, register, running_servers
from test_cli import stylecast
from test_metrics import scrape, value

from stylecast.client import AlreadyExists, AsyncClient, FailedPrecondition, InvalidArgument
from stylecast.model import BUILTIN_DIR
from stylecast.server.app import start
from stylecast.server.config import ConfigError, ServerConfig
from stylecast.server.errors import FailedPrecondition as ServerFailedPrecondition
from stylecast.v1 import stylecast_pb2 as pb
from stylecast.v1 import stylecast_pb2_grpc as pb_grpc

MODEL = "stylecast-small"
FORMAT = "tflite-fp32"
RAW = pb.OutputOptions(encoding=pb.ENCODING_RAW_RGB24)


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory) -> Path:
    """A models folder with ``stylecast-small`` at versions 4, 5 and 6 (the built-in model, fp32 only)."""
    source = next((BUILTIN_DIR / MODEL).iterdir())
    manifest = json.loads((source / "manifest.json").read_text())
    files = manifest["artifacts"][FORMAT]["files"]
    root = tmp_path_factory.mktemp("models")
    for version in ("4", "5", "6"):
        folder = root / MODEL / version
        for f in files:
            (folder / f["path"]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / f["path"], folder / f["path"])
        (folder / "manifest.json").write_text(json.dumps(
            manifest | {"version": version, "artifacts": {FORMAT: manifest["artifacts"][FORMAT]}}))
    return root


@pytest.fixture
async def split_server(two_versions, tmp_path):
    async with running_servers(two_versions, tmp_path) as start_server:
        yield lambda **overrides: start_server(**({"model": MODEL, "format": FORMAT, "quality_sample_every": 0,
                                                   "metrics_port": free_port()} | overrides))


class Stream:
    """One open Stylize call: ``send`` a frame and read its answer, ``close`` to end it."""

    def __init__(self, stub, style_id: str, version: str = "") -> None:
        self.call = stub.Stylize()
        self.config = pb.StreamConfig(style_id=style_id, output=RAW, model_version=version)
        self.versions: list[str] = []
        self.sent = 0

    async def send(self, img) -> pb.StylizeResponse:
        if not self.sent:
            await self.call.write(pb.StylizeRequest(config=self.config))
        await self.call.write(pb.StylizeRequest(frame=pb.Frame(id=self.sent, image=raw_image(img))))
        self.sent += 1
        response = await self.call.read()
        assert response.WhichOneof("msg") == "frame", response
        assert response.frame.id == self.sent - 1
        self.versions.append(response.frame.model_version)
        return response

    async def close(self) -> None:
        await self.call.done_writing()
        assert await self.call.read() is grpc.aio.EOF
        assert await self.call.code() == grpc.StatusCode.OK


async def test_an_80_20_split_shares_200_streams_by_weight_and_each_keeps_its_version(split_server):
    server = await split_server(traffic_split="4=80,5=20")
    frame = picture(64, 64, seed=3)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=CHANNEL_OPTIONS) as channel, \
            AsyncClient(f"127.0.0.1:{server.port}") as client:
        stub = pb_grpc.StyleTransferStub(channel)
        style = await register(stub, picture(96, 96, seed=1))
        shares = {v.version: v.percent for v in await client.traffic_split()}
        assert shares == {"4": 80, "5": 20}
        assert set((await client.get_style(style.id)).model_versions) == {f"{MODEL}:4", f"{MODEL}:5"}
        streams = []
        for wave in range(10):  # 200 streams, 20 open at once, 2-3 frames each
            batch = [Stream(stub, style.id) for _ in range(20)]
            for i, s in enumerate(batch):
                for _ in range(2 + (wave + i) % 2):
                    await s.send(frame)
            await asyncio.gather(*(s.close() for s in batch))
            streams += batch
        samples = await scrape(server.metrics_endpoint.port)
    assert all(len(set(s.versions)) == 1 for s in streams), "a stream changed version mid-stream"
    per_version = {v: [s for s in streams if s.versions[0] == v] for v in ("4", "5")}
    n, p = len(streams), 0.2
    sigma = math.sqrt(n * p * (1 - p))  # binomial: 40 ± 5.7 streams on version 5
    assert len(per_version["4"]) + len(per_version["5"]) == n
    assert abs(len(per_version["5"]) - n * p) <= 4 * sigma, len(per_version["5"])
    for version, group in per_version.items():
        labels = dict(model=MODEL, version=version)
        assert value(samples, "stylecast_version_streams_total", **labels) == len(group)
        assert value(samples, "stylecast_version_frames_total", **labels) == sum(len(s.versions) for s in group)
        assert value(samples, "stylecast_version_open_streams", **labels) == 0
    assert value(samples, "stylecast_version_traffic_percent", model=MODEL, version="5") == 20


async def test_a_client_pins_a_version_for_streams_and_single_images(split_server):
    server = await split_server(traffic_split="4=100,5=0")
    frame = picture(64, 48, seed=4)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=CHANNEL_OPTIONS) as channel:
        stub = pb_grpc.StyleTransferStub(channel)
        style = await register(stub, picture(96, 96, seed=1))
        pinned, free = Stream(stub, style.id, version="5"), Stream(stub, style.id)
        for _ in range(3):
            await pinned.send(frame)
            await free.send(frame)
        await asyncio.gather(pinned.close(), free.close())
        assert (pinned.versions, free.versions) == (["5"] * 3, ["4"] * 3)
        image = await stub.StylizeImage(pb.StylizeImageRequest(
            config=pb.StreamConfig(style_id=style.id, output=RAW, model_version="5"), image=raw_image(frame)))
        assert (image.result.model, image.result.model_version) == (MODEL, "5")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.StylizeImage(pb.StylizeImageRequest(
                config=pb.StreamConfig(style_id=style.id, model_version="9"), image=raw_image(frame)))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "version '9'" in err.value.details() and "loaded: 4, 5" in err.value.details()


async def test_shifting_weights_moves_new_streams_only(split_server):
    server = await split_server(traffic_split="4=100,5=0")
    frame = picture(64, 64, seed=5)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=CHANNEL_OPTIONS) as channel, \
            AsyncClient(f"127.0.0.1:{server.port}") as client:
        stub = pb_grpc.StyleTransferStub(channel)
        style = await register(stub, picture(96, 96, seed=1))
        old = [Stream(stub, style.id) for _ in range(5)]
        for s in old:
            await s.send(frame)
        shares = await client.set_traffic_split({"4": 0, "5": 100})
        assert {v.version: (v.percent, v.open_streams) for v in shares} == {"4": (0, 5), "5": (100, 0)}
        new = [Stream(stub, style.id) for _ in range(5)]
        for _ in range(2):
            for s in old + new:
                await s.send(frame)
        await asyncio.gather(*(s.close() for s in old + new))
    assert all(s.versions == ["4"] * 3 for s in old)
    assert all(s.versions == ["5"] * 2 for s in new)


async def test_unloading_a_version_with_open_streams_drains_them_without_losing_a_frame(split_server):
    server = await split_server(traffic_split="4=80,5=20")
    frame = picture(64, 64, seed=6)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=CHANNEL_OPTIONS) as channel, \
            AsyncClient(f"127.0.0.1:{server.port}") as client:
        stub = pb_grpc.StyleTransferStub(channel)
        style = await register(stub, picture(96, 96, seed=1))
        streams = [Stream(stub, style.id, version="5") for _ in range(2)] + [Stream(stub, style.id) for _ in range(30)]
        for s in streams:
            await s.send(frame)
        on_5 = [s for s in streams if s.versions == ["5"]]
        assert await client.unload_model(MODEL, "5") == (False, False, True, len(on_5))
        shares = {v.version: (v.percent, v.open_streams, v.draining) for v in await client.traffic_split()}
        assert shares == {"4": (100, len(streams) - len(on_5), False), "5": (0, len(on_5), True)}
        with pytest.raises(FailedPrecondition, match=r"being unloaded; pin another version \(taking new streams: 4\)"):
            async for _ in client.stream([frame], style.id, model_version="5"):
                pass
        with pytest.raises(InvalidArgument, match=r"version '9' .* \(loaded: 4\)"):
            async for _ in client.stream([frame], style.id, model_version="9"):
                pass
        late = [Stream(stub, style.id) for _ in range(5)]
        for _ in range(3):  # the open streams go on, each on its version; new ones all get 4
            for s in streams + late:
                await s.send(frame)
        await asyncio.gather(*(s.close() for s in streams + late))
        while "5" in {v.version for v in await client.traffic_split()}:  # closes once its streams ended
            await asyncio.sleep(0.05)
        samples = await scrape(server.metrics_endpoint.port)
        with pytest.raises(FailedPrecondition, match="the only version loaded"):
            await client.unload_model(MODEL, "4")
    assert all(s.versions == ["5"] * 4 for s in on_5) and all(s.versions == ["4"] * 4 for s in streams if s not in on_5)
    assert all(s.versions == ["4"] * 3 for s in late)
    assert value(samples, "stylecast_version_frames_total", model=MODEL, version="5") is None  # series removed
    assert value(samples, "stylecast_version_frames_total", model=MODEL, version="4") == \
        4 * (len(streams) - len(on_5)) + 3 * len(late)
    assert value(samples, "stylecast_model_ready", model=MODEL, backend="litert") == 1


async def test_a_plain_load_of_another_version_replaces_every_split_version_mid_stream(split_server):
    """LoadModel (not a split) keeps its hot-swap meaning: the new version replaces all loaded ones,
    and their open streams go on on it without a lost frame."""
    server = await split_server(traffic_split="4=80,5=20", model_version="4")
    frame = picture(64, 64, seed=7)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=CHANNEL_OPTIONS) as channel, \
            AsyncClient(f"127.0.0.1:{server.port}") as client:
        stub = pb_grpc.StyleTransferStub(channel)
        style = await register(stub, picture(96, 96, seed=1))
        streams = [Stream(stub, style.id, version="4"), Stream(stub, style.id, version="5")]
        for s in streams:
            await s.send(frame)
        info = await client.load_model(MODEL, "6")
        assert info.version == "6"
        assert [(v.version, v.percent) for v in await client.traffic_split()] == [("6", 100)]
        for s in streams:
            await s.send(frame)
        await asyncio.gather(*(s.close() for s in streams))
    assert [s.versions for s in streams] == [["4", "6"], ["5", "6"]]


async def test_invalid_splits_are_refused_with_what_to_change_and_change_nothing(split_server):
    server = await split_server(traffic_split="4=80,5=20")
    target = f"127.0.0.1:{server.port}"
    async with AsyncClient(target) as client:
        before = await client.traffic_split()
        for weights, words in (({"4": 80, "9": 20}, "version '9' of model stylecast-small is not installed"),
                               ({"4": 80, "5": 10}, "must sum to 100, got 90"),
                               ({"4": 120, "5": -20}, "not a percentage; use 0..100"),
                               ({}, "at least one VERSION=PERCENT")):
            with pytest.raises(InvalidArgument, match=words) as err:
                await client.set_traffic_split(weights)
            assert err.value.reason == "INVALID_SPLIT"
        with pytest.raises(InvalidArgument, match="is not served here"):
            await client.set_traffic_split({"1": 100}, model="magenta")
        assert await client.traffic_split() == before
    code, out = await stylecast("models", "split", "4=90", "5=5", "--target", target)
    assert code == 1 and "must sum to 100, got 95" in out
    code, out = await stylecast("models", "split", "4=half", "--target", target)
    assert code == 1 and "VERSION=PERCENT" in out
    code, out = await stylecast("models", "split", "4=50", "5=50", "--target", target)
    assert code == 0 and "4\t50%" in out and "5\t50%" in out
    code, out = await stylecast("models", "split", "--target", target)
    assert code == 0 and out.splitlines()[0].startswith("4\t50%\t0 streams\tlitert:tflite-fp32")


def test_a_bad_split_in_the_config_stops_the_server_with_a_message(tmp_path):
    for split, words in (("4=80,5=30", "summing to 100"), ("4=80,5", "VERSION=PERCENT"),
                         ("4=80,4=20", "appears twice")):
        with pytest.raises(ConfigError, match=words):
            ServerConfig(traffic_split=split, style_store=f"sqlite:///{tmp_path}/s.db")
    with pytest.raises(ConfigError, match="does not name model_version"):
        ServerConfig(traffic_split="4=80,5=20", model_version="3", style_store=f"sqlite:///{tmp_path}/s.db")
    assert ServerConfig(traffic_split="4=80, 5=20").split_versions == ("4", "5")
    assert ServerConfig(traffic_split="4=20,5=80").split_versions == ("5", "4")


@pytest.fixture
def misplaced_copy(two_versions, tmp_path) -> Path:
    """The three versions plus folder 7, a copy of 4 whose manifest.json still says version 4."""
    root = tmp_path / "copied"
    shutil.copytree(two_versions, root)
    shutil.copytree(root / MODEL / "4", root / MODEL / "7")
    return root


async def test_a_folder_whose_manifest_names_another_version_is_listed_failed_and_never_served(
        misplaced_copy, tmp_path, caplog):
    running = await start(make_config(misplaced_copy, tmp_path, model=MODEL, format=FORMAT, quality_sample_every=0,
                                      traffic_split="4=100"))
    try:
        async with AsyncClient(f"127.0.0.1:{running.port}") as client:
            listed = {m.version: m for m in await client.list_models(MODEL)}
            assert sorted(listed) == ["4", "5", "6", "7"]
            assert listed["7"].state == "failed" and listed["4"].state == "active"
            error = listed["7"].artifacts[0].error
            assert "says stylecast-small:4" in error and "stylecast-small/7" in error
            assert "edit manifest.json" in error and "rename the folder" in error
            assert "stylecast-small/7" in caplog.text
            caplog.clear()
            assert {m.version for m in await client.list_models(MODEL)} == {"4", "5", "6", "7"}
            assert "stylecast-small/7" not in caplog.text  # logged once, not at every listing
            with pytest.raises(FailedPrecondition, match="says stylecast-small:4"):
                await client.load_model(MODEL, "7")
            before = await client.traffic_split()
            with pytest.raises(FailedPrecondition, match="edit manifest.json"):
                await client.set_traffic_split({"6": 50, "7": 50})
            assert await client.traffic_split() == before
        code, out = await stylecast("models", "load", MODEL, "--version", "7", "--target", f"127.0.0.1:{running.port}")
        assert code == 1 and "rename the folder" in out and "4 active" not in out
    finally:
        await running.stop(1.0)
    with pytest.raises(ServerFailedPrecondition, match="says stylecast-small:4"):
        await start(make_config(misplaced_copy, tmp_path, model=MODEL, format=FORMAT, quality_sample_every=0,
                                traffic_split="6=50,7=50"))


async def test_a_split_without_a_model_name_serves_the_only_model_and_asks_for_one_among_several(
        two_versions, tmp_path):
    running = await start(make_config(two_versions, tmp_path, format=FORMAT, quality_sample_every=0,
                                      traffic_split="4=50,5=50"))
    try:
        async with AsyncClient(f"127.0.0.1:{running.port}") as client:
            assert {v.version: v.percent for v in await client.traffic_split()} == {"4": 50, "5": 50}
    finally:
        await running.stop(1.0)
    several = tmp_path / "several"
    shutil.copytree(two_versions, several)
    shutil.copytree(two_versions / MODEL, several / "other-model")
    with pytest.raises(ServerFailedPrecondition, match="found other-model, stylecast-small; choose one with "
                                                       "--model"):
        await start(make_config(several, tmp_path, format=FORMAT, quality_sample_every=0, model_version="4"))


async def test_re_uploading_an_installed_package_keeps_its_state_and_a_different_one_is_refused(
        split_server, two_versions, tmp_path):
    server = await split_server(traffic_split="4=80,5=20")
    target = f"127.0.0.1:{server.port}"
    async with AsyncClient(target) as client:
        result = await client.upload_model(two_versions / MODEL / "4")
        assert result.complete and result.already_installed
        states = {m.version: m.state for m in await client.list_models(MODEL)}
        assert states["4"] == states["5"] == "active"
        assert {v.version: v.percent for v in await client.traffic_split()} == {"4": 80, "5": 20}
        changed = tmp_path / "changed" / MODEL / "5"
        shutil.copytree(two_versions / MODEL / "5", changed)
        manifest = json.loads((changed / "manifest.json").read_text())
        (changed / "manifest.json").write_text(json.dumps(manifest | {"description": "retrained"}))
        with pytest.raises(AlreadyExists, match="under a new version .edit manifest.json's version"):
            await client.upload_model(changed)
        assert {m.version: m.state for m in await client.list_models(MODEL)} == states
    code, out = await stylecast("models", "upload", str(two_versions / MODEL / "5"), "--target", target)
    assert code == 0 and "stylecast-small:5 already installed, identical" in out, out


async def test_cli_unload_of_a_split_version_says_it_drains_its_open_streams(split_server):
    server = await split_server(traffic_split="4=80,5=20")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=CHANNEL_OPTIONS) as channel:
        stub = pb_grpc.StyleTransferStub(channel)
        style = await register(stub, picture(96, 96, seed=1))
        pinned = Stream(stub, style.id, version="5")
        await pinned.send(picture(64, 64, seed=8))
        code, out = await stylecast("models", "unload", MODEL, "5", "--target", f"127.0.0.1:{server.port}")
        assert code == 0 and "stylecast-small:5  unloaded: takes no new streams; draining 1 open stream " in out, out
        await pinned.send(picture(64, 64, seed=9))
        await pinned.close()
    assert pinned.versions == ["5", "5"]


async def test_split_typos_get_messages_that_match_the_cli_and_the_sdk(split_server, caplog):
    caplog.set_level(logging.INFO, logger="stylecast.server")
    server = await split_server(traffic_split="4=80,5=20")
    assert "stylecast serving stylecast-small:4 (traffic split 4=80%, 5=20%) with litert" in caplog.text
    target = f"127.0.0.1:{server.port}"
    code, out = await stylecast("models", "split", "4=abc", "--target", target)
    assert code == 1 and "whole percent" in out and "commas" not in out, out
    code, out = await stylecast("models", "split", "4=50.5", "5=49.5", "--target", target)
    assert code == 1 and "'4=50.5': PERCENT must be a whole percent" in out, out
    code, out = await stylecast("models", "split", "4=80", "--target", target)
    assert code == 1 and "e.g. 4=100" in out, out
    async with AsyncClient(target) as client:
        for weights in ({"4": 50.5, "5": 49.5}, {"4": True, "5": 99}):
            with pytest.raises(ValueError, match="not a whole percent"):
                await client.set_traffic_split(weights)
        assert {v.version: v.percent for v in await client.traffic_split()} == {"4": 80, "5": 20}


async def test_a_models_dir_that_does_not_exist_is_named(tmp_path):
    with pytest.raises(ServerFailedPrecondition, match="nosuchdir does not exist"):
        await start(make_config(tmp_path / "nosuchdir", tmp_path, format=FORMAT, quality_sample_every=0))
