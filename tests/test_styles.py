"""The style library (real SQLite) and the style RPCs through a real server."""

from __future__ import annotations

import asyncio
import hashlib
import io

import grpc
import numpy as np
import pytest
from conftest import encoded, picture, register
from PIL import Image

from stylecast.model.preprocess import style_image_uint8
from stylecast.server.errors import InvalidArgument
from stylecast.server.sqlite_store import SqliteStyleStore
from stylecast.server.style_vectors import nearest
from stylecast.v1 import stylecast_pb2 as pb
from stylecast.v1 import stylecast_pb2_grpc as pb_grpc


async def test_library_insert_is_idempotent_and_pages_in_creation_order(tmp_path):
    lib = SqliteStyleStore(tmp_path / "s.db")
    await lib.open()
    try:
        ids = [f"id{i:02d}" for i in range(7)]
        for i, sid in enumerate(ids):
            record, created = await lib.add(sid, f"n{i}", b"png", ("m", "1", np.full(4, i, np.float32)))
            assert created and record.model_versions == ("m:1",)
        again, created = await lib.add(ids[0], "other name", b"png")
        assert not created and again.name == "n0"
        seen, token = [], ""
        while True:
            page, token = await lib.list(3, token)
            seen += [r.id for r in page]
            if not token:
                break
        assert sorted(seen) == ids and len(seen) == 7
        with pytest.raises(InvalidArgument, match="page_token"):
            await lib.list(3, "garbage!")
        assert await lib.delete(ids[1]) and not await lib.delete(ids[1])
        assert await lib.vector(ids[1], "m", "1") is None  # vectors go with their style
        np.testing.assert_array_equal(await lib.vector(ids[2], "m", "1"), np.full(4, 2))
        assert await lib.missing_vectors("m", "2") == sorted(set(ids) - {ids[1]})
        await lib.put_vector(ids[2], "m", "2", np.ones(4))
        assert (await lib.get(ids[2])).model_versions == ("m:1", "m:2")
    finally:
        await lib.close()


def test_nearest_uses_centred_cosine():
    ids = ["a", "b", "c", "d"]
    base = np.array([10.0, 10.0, 10.0])  # a large shared mean that raw cosine would be dominated by
    m = np.stack([base + [1, 0, 0], base + [0.9, 0.1, 0], base + [-1, 0, 0], base + [0, 0, 1]]).astype(np.float32)
    out = nearest(m[0], ids, m, limit=2, exclude="a")
    assert [i for i, _ in out] == ["b", "d"]
    assert out[0][1] > 0.9
    assert nearest(m[0], [], np.zeros((0, 0)), 3) == []


async def test_register_is_idempotent_and_id_is_the_normalised_image_hash(stub):
    img = picture(150, 100, seed=21)
    style = await register(stub, img, name="waves")
    expected = hashlib.sha256(style_image_uint8(Image.fromarray(img)).tobytes()).hexdigest()
    assert style.id == expected and style.name == "waves"
    assert style.model_versions == ["tiny:1"]
    data = encoded(img)
    again = await stub.RegisterStyle(iter([pb.StyleUpload(name="other", chunk=data)]))
    assert not again.created and again.style.id == style.id and again.style.name == "waves"
    got = await stub.GetStyle(pb.GetStyleRequest(id=style.id, include_thumbnail=True))
    assert Image.open(io.BytesIO(got.thumbnail_jpeg)).size == (128, 128)
    listed = await stub.ListStyles(pb.ListStylesRequest())
    assert [s.id for s in listed.styles] == [style.id] and not listed.next_page_token
    assert (await stub.DeleteStyle(pb.DeleteStyleRequest(id=style.id))).deleted
    assert not (await stub.DeleteStyle(pb.DeleteStyleRequest(id=style.id))).deleted
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetStyle(pb.GetStyleRequest(id=style.id))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_bad_uploads_get_clear_statuses_and_the_server_keeps_serving(server_factory):
    server = await server_factory(max_message_bytes=200_000)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.StyleTransferStub(channel)
        cases = {
            "corrupt": ([pb.StyleUpload(chunk=b"\x89PNG\r\n\x1a\n" + b"x" * 100)], grpc.StatusCode.INVALID_ARGUMENT),
            "empty": ([pb.StyleUpload(name="nothing")], grpc.StatusCode.INVALID_ARGUMENT),
            "too big": ([pb.StyleUpload(chunk=b"\0" * 150_000)] * 2, grpc.StatusCode.RESOURCE_EXHAUSTED),
        }
        for label, (uploads, code) in cases.items():
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.RegisterStyle(iter(uploads))
            assert err.value.code() == code, label
            assert err.value.details(), label
        # one message above the transport limit is refused by gRPC itself
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.RegisterStyle(iter([pb.StyleUpload(chunk=b"\0" * 300_000)]))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (await register(stub, picture(64, 64, seed=1))).id


async def test_search_finds_the_nearest_styles(stub):
    base = picture(128, 128, seed=30)
    near = np.clip(base.astype(int) + 6, 0, 255).astype(np.uint8)   # a slightly brighter copy
    others = [picture(128, 128, seed=s) for s in (31, 32, 33)]
    styles = await asyncio.gather(*(register(stub, im) for im in [base, near, *others]))
    res = await stub.SearchStyles(pb.SearchStylesRequest(style_id=styles[0].id, limit=2))
    assert len(res.matches) == 2
    assert styles[0].id not in [m.style.id for m in res.matches]
    assert res.matches[0].style.id == styles[1].id
    assert res.matches[0].score >= res.matches[1].score
    by_image = await stub.SearchStyles(pb.SearchStylesRequest(image=pb.Image(data=encoded(base)), limit=1))
    assert by_image.matches[0].style.id in (styles[0].id, styles[1].id)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.SearchStyles(pb.SearchStylesRequest(style_id="nope"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
