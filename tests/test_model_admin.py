"""ModelAdmin: resumable uploads, and every failure (corrupt chunk, truncated upload, lying
manifest, a model that fails to load, a corrupt artifact on disk) leaving the previous model serving."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from pathlib import Path

import grpc
import pytest
from conftest import CHANNEL_OPTIONS, make_config, picture, raw_image, register
from test_cli import stylecast

from stylecast.backends.base import unavailable
from stylecast.backends.package import CHUNK_SIZE, write_manifest
from stylecast.client import AsyncClient, DataLoss, FailedPrecondition, InvalidArgument
from stylecast.server.app import start
from stylecast.v1 import model_admin_pb2 as apb
from stylecast.v1 import model_admin_pb2_grpc as apb_grpc
from stylecast.v1 import stylecast_pb2 as pb
from stylecast.v1 import stylecast_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration


@pytest.fixture
async def admin(server):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=CHANNEL_OPTIONS) as channel:
        yield apb_grpc.ModelAdminStub(channel), pb_grpc.StyleTransferStub(channel)


def big_package(tmp_path: Path, version: str = "7") -> Path:
    """tiny/VERSION with a 2.5 MiB extra file, so an upload has several chunks per file."""
    root = tmp_path / "src" / "tiny" / version
    root.mkdir(parents=True)
    payload = hashlib.sha256(b"seed").digest() * (5 * CHUNK_SIZE // 64)
    (root / "extra.bin").write_bytes(payload)
    (root / "x.tflite").write_bytes(b"not a model")
    write_manifest(root, "tiny", version, 100, {"tflite-fp32": {"files": ["extra.bin", "x.tflite"],
                                                                   "endpoints": {}}})
    return root


def chunks_of(root: Path) -> list[apb.ModelChunk]:
    manifest = json.loads((root / "manifest.json").read_text())
    out = []
    for art in manifest["artifacts"].values():
        for f in art["files"]:
            data = (root / f["path"]).read_bytes()
            for i in range(len(f["chunks"])):
                out.append(apb.ModelChunk(chunk=apb.FileChunk(path=f["path"], index=i,
                                                              data=data[i * CHUNK_SIZE:(i + 1) * CHUNK_SIZE])))
    return out


class Refused(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code, self.details = code, details


async def upload_raw(stub, manifest: bytes, chunks: list[apb.ModelChunk],
                     after_plan=None) -> list[apb.UploadStatus]:
    """Manifest, the server's plan, then ``chunks`` (or ``after_plan(plan)``); raises :class:`Refused`."""
    call = stub.UploadModel()
    statuses = []
    try:
        await call.write(apb.ModelChunk(manifest=manifest))
        statuses.append(await call.read())
        for c in (after_plan(statuses[0]) if after_plan else chunks):
            await call.write(c)
        await call.done_writing()
        while (msg := await call.read()) is not grpc.aio.EOF:
            statuses.append(msg)
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
        pass
    if (code := await call.code()) != grpc.StatusCode.OK:
        raise Refused(code, await call.details())
    return statuses


async def still_serving(stylize_stub, version: str = "1") -> None:
    style = await register(stylize_stub, picture(64, 64, seed=3))

    async def requests():
        yield pb.StylizeRequest(config=pb.StreamConfig(style_id=style.id))
        yield pb.StylizeRequest(frame=pb.Frame(id=5, image=raw_image(picture(32, 32))))

    answers = [r async for r in stylize_stub.Stylize(requests())]
    assert [(a.frame.id, a.frame.model_version) for a in answers] == [(5, version)]


async def test_corrupt_chunk_is_refused_and_the_upload_resumes_with_only_missing_chunks(server, admin, tmp_path):
    stub, stylize = admin
    root = big_package(tmp_path)
    manifest = (root / "manifest.json").read_bytes()
    chunks = chunks_of(root)
    bad = apb.ModelChunk()
    bad.CopyFrom(chunks[2])
    bad.chunk.data = b"\0" + bad.chunk.data[1:]
    with pytest.raises(Refused) as err:
        await upload_raw(stub, manifest, chunks[:2] + [bad])
    assert err.value.code == grpc.StatusCode.DATA_LOSS
    assert "extra.bin: chunk 2 sha256 mismatch" in err.value.details
    await still_serving(stylize)
    listed = {(m.name, m.version): m for m in (await stub.ListModels(apb.ListModelsRequest())).models}
    assert listed[("tiny", "7")].state == apb.MODEL_STATE_UPLOADING
    assert listed[("tiny", "7")].upload.received_chunks == 2
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.LoadModel(apb.LoadModelRequest(name="tiny", version="7"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "still uploading" in err.value.details()

    by_ref = {(c.chunk.path, c.chunk.index): c for c in chunks}

    def missing_only(plan: apb.UploadStatus) -> list[apb.ModelChunk]:  # resume: send what the server lacks
        assert plan.received_chunks == 2 and len(plan.missing) == len(chunks) - 2
        assert {(m.path, m.index) for m in plan.missing} == set(list(by_ref)[2:])
        return [by_ref[(m.path, m.index)] for m in plan.missing]

    final = await upload_raw(stub, manifest, [], after_plan=missing_only)
    assert final[-1].complete and final[-1].received_chunks == len(chunks) and not final[-1].missing

    # A client that streams every chunk without waiting for the plan, once the package is installed:
    # answered complete, and the installed (verified) files are not written again.
    installed = server.engine.registry.installed("tiny", "7")
    stamps = {p: p.stat().st_mtime_ns for p in installed.rglob("*") if p.is_file()}
    again = await upload_raw(stub, manifest, chunks)
    assert again[0].already_installed and again[-1].complete
    assert {p: p.stat().st_mtime_ns for p in installed.rglob("*") if p.is_file()} == stamps


async def test_truncated_upload_is_incomplete_then_resumes_through_the_sdk(server, tmp_path):
    root = big_package(tmp_path)
    chunks = chunks_of(root)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = apb_grpc.ModelAdminStub(channel)
        short = apb.ModelChunk()
        short.CopyFrom(chunks[1])
        short.chunk.data = short.chunk.data[:1000]
        with pytest.raises(Refused) as err:  # a chunk cut short
            await upload_raw(stub, (root / "manifest.json").read_bytes(), [chunks[0], short])
        assert err.value.code == grpc.StatusCode.DATA_LOSS and "truncated" in err.value.details
        with pytest.raises(Refused) as err:  # the stream ends early
            await upload_raw(stub, (root / "manifest.json").read_bytes(), chunks[:3])
        assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert f"{len(chunks) - 3} of {len(chunks)} chunks missing" in err.value.details
        await still_serving(pb_grpc.StyleTransferStub(channel))
    seen: list[tuple[int, int]] = []
    async with AsyncClient(f"127.0.0.1:{server.port}") as client:
        result = await client.upload_model(root, progress=lambda done, total: seen.append((done, total)))
        assert result.complete and result.received_bytes == result.total_bytes
        kept = sum(len(c.chunk.data) for c in chunks[:3])
        assert seen[0] == (kept, result.total_bytes)  # the three chunks received before are not re-sent
        assert len(seen) == len(chunks) - 3 + 1
        again = await client.upload_model(root)  # idempotent once installed
        assert again.complete
    assert (Path(server.engine.config.upload_dir) / "tiny" / "7" / "extra.bin").read_bytes() == \
        (root / "extra.bin").read_bytes()


def lie(manifest: dict, how: str) -> dict:
    files = manifest["artifacts"]["tflite-fp32"]["files"]
    if how == "path":
        files[0]["path"] = "../../escape.bin"
    elif how == "size":
        files[0]["size"] += 3 * CHUNK_SIZE
    elif how == "hash":
        files[0]["sha256"] = hashlib.sha256(b"something else").hexdigest()
    elif how == "name":
        manifest["name"] = ".uploads"
    return manifest


@pytest.mark.parametrize("how, code, message", [
    ("path", grpc.StatusCode.INVALID_ARGUMENT, "unsafe path"),
    ("size", grpc.StatusCode.INVALID_ARGUMENT, "chunks, a size of"),
    ("hash", grpc.StatusCode.DATA_LOSS, "does not match its own chunks"),
    ("name", grpc.StatusCode.INVALID_ARGUMENT, "is not 1-64 of A-Z a-z 0-9"),
])
async def test_a_lying_manifest_is_refused_and_nothing_is_installed(admin, tmp_path, how, code, message):
    stub, stylize = admin
    root = big_package(tmp_path)
    manifest = json.dumps(lie(json.loads((root / "manifest.json").read_text()), how)).encode()
    with pytest.raises(Refused) as err:
        await upload_raw(stub, manifest, chunks_of(root))
    assert err.value.code == code
    assert message in err.value.details
    listed = [(m.name, m.version, m.state) for m in (await stub.ListModels(apb.ListModelsRequest())).models]
    assert listed == [("tiny", "1", apb.MODEL_STATE_ACTIVE)]
    assert not (tmp_path.parent / "escape.bin").exists() and not (tmp_path / "escape.bin").exists()
    await still_serving(stylize)


async def test_a_model_that_fails_to_load_stays_inactive_and_the_old_one_serves(server, tmp_path):
    root = big_package(tmp_path)  # verified bytes, but not a TFLite model
    async with AsyncClient(f"127.0.0.1:{server.port}") as client:
        assert (await client.upload_model(root)).complete
        with pytest.raises(FailedPrecondition) as err:
            await client.load_model("tiny", "7", load_order=["litert:tflite-fp32"])
        assert "was not loaded; the previous model keeps serving" in err.value.details
        assert "load failed" in err.value.details
        models = {(m.name, m.version): m for m in await client.list_models()}
        failed = models[("tiny", "7")]
        assert failed.state == "failed" and failed.artifacts[0].state == "failed"
        assert "load failed" in failed.artifacts[0].error
        assert models[("tiny", "1")].state == "active"
        style = await client.register_style(picture(64, 64, seed=4))
        assert (await client.stylize(picture(32, 32), style)).model_version == "1"
        with pytest.raises(InvalidArgument, match="backend:format"):
            await client.load_model("tiny", "7", load_order=["litert"])
        with pytest.raises(FailedPrecondition, match="cannot load"):
            await client.load_model("tiny", "7", load_order=["litert:onnx"])
        # unloading: never the serving model, never the models folder; an upload can be deleted
        with pytest.raises(FailedPrecondition, match="is serving"):
            await client.unload_model("tiny", "1")
        assert await client.unload_model("tiny", "7", delete_files=True) == (False, True, False, 0)
        assert [m.version for m in await client.list_models()] == ["1"]
    assert server.engine.metrics.registry.get_sample_value(
        "stylecast_model_load_failures_total", {"model": "tiny", "backend": "litert"}) == 1


async def test_a_corrupt_artifact_on_disk_fails_its_upgrade_and_the_first_keeps_serving(tiny_models_dir, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(tiny_models_dir / "tiny" / "1", models / "tiny" / "1")
    victim = models / "tiny" / "1" / "tflite" / "fp32" / "stylize.tflite"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    server = await start(make_config(models, tmp_path, load_order="litert:tflite-int8,litert:tflite-fp32"))
    try:
        await _corrupt_fp32_fails_while_int8_serves(server)
    finally:
        await server.stop(1.0)


async def _corrupt_fp32_fails_while_int8_serves(server) -> None:
    async with AsyncClient(f"127.0.0.1:{server.port}") as client:
        last = None
        async for info in client.watch_model():
            last = info
        states = {a.format: a for a in last.artifacts}
        assert states["tflite-int8"].state == "active"
        assert states["tflite-fp32"].state == "failed"
        assert "verification failed" in states["tflite-fp32"].error and "sha256 mismatch" in states["tflite-fp32"].error
        style = await client.register_style(picture(64, 64, seed=5))
        result = await client.stylize(picture(32, 32), style)
        assert result.ok and server.engine.slot.model.format == "tflite-int8"
        backends = {b.name: b for b in await client.list_backends()}
        assert backends["litert"].serving and backends["litert"].installed and backends["litert"].unavailable == ""
        # installed is not runnable: each backend's reason is the one --backend auto gives on this host
        assert {n: b.unavailable for n, b in backends.items()} == {n: unavailable(n) for n in backends}
        assert "tflite-int8" in backends["litert"].formats


async def test_model_admin_is_loopback_only_without_authentication(server_factory):
    public = await server_factory(host="0.0.0.0", admin_port=0, allow_unauthenticated=True)
    assert public.admin_port not in (None, public.port)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{public.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await apb_grpc.ModelAdminStub(channel).ListModels(apb.ListModelsRequest())
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    async with AsyncClient(f"127.0.0.1:{public.admin_port}") as client:
        assert [m.state for m in await client.list_models()] == ["active"]
    off = await server_factory(admin=False)
    assert off.admin_port is None
    async with grpc.aio.insecure_channel(f"127.0.0.1:{off.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await apb_grpc.ModelAdminStub(channel).ListModels(apb.ListModelsRequest())
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_cli_models_upload_list_load_watch_unload(server, tmp_path, tiny_v2_dir):
    target = f"127.0.0.1:{server.port}"
    code, out = await stylecast("models", "upload", tiny_v2_dir / "tiny" / "2", "--target", target)
    assert code == 0 and "tiny:2 uploaded" in out
    code, out = await stylecast("models", "list", "--target", target)
    assert code == 0
    rows = [line.split("\t") for line in out.splitlines() if not line.startswith(" ")]
    assert [(r[0], r[1], r[2]) for r in rows if len(r) > 2] == [("tiny", "1", "active"), ("tiny", "2", "available")]
    code, out = await stylecast("models", "load", "tiny", "--version", "2", "--order", "litert:tflite-int8",
                                "--order", "litert:tflite-fp32", "--target", target)
    assert code == 0 and "tiny\t2\tactive\tlitert:tflite-fp32" in out
    code, out = await stylecast("models", "unload", "tiny", "2", "--target", target)
    assert code == 1 and "is serving" in out
    code, out = await stylecast("models", "watch", "--target", target)
    assert code == 0 and "tiny\t2\tactive" in out
    assert server.engine.slot.model.key == ("tiny", "2")


async def test_sdk_errors_are_typed(server, tmp_path):
    async with AsyncClient(f"127.0.0.1:{server.port}") as client:
        root = big_package(tmp_path)
        manifest = json.loads((root / "manifest.json").read_text())
        manifest["artifacts"]["tflite-fp32"]["files"][0]["sha256"] = "0" * 64
        (root / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(DataLoss, match="does not match"):
            await client.upload_model(root)
