"""The style store contract, run against both stores: SQLite and a real redis-server."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from stylecast.server.errors import InvalidArgument, Unavailable
from stylecast.server.redis_store import RedisStyleStore
from stylecast.server.engine import open_style_store
from stylecast.server.sqlite_store import SqliteStyleStore


@pytest.fixture(params=["sqlite", "redis", "rediss"])
def make_store(request: pytest.FixtureRequest, tmp_path):
    """A factory of stores on one library: SQLite, Redis, or Redis over TLS with a password."""
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        return lambda: open_style_store(url)
    if request.param == "rediss":
        server = request.getfixturevalue("tls_redis_server")
        server.flush()
        return lambda: open_style_store(server.tls_url, server.password)
    return lambda: open_style_store(f"sqlite:///{tmp_path / 'styles.db'}")


@pytest.fixture
async def store(make_store):
    lib = make_store()
    await lib.open()
    yield lib
    await lib.close()


async def page_all(lib, size: int, between=None) -> list[str]:
    seen, token = [], ""
    while True:
        page, token = await lib.list(size, token)
        seen += [r.id for r in page]
        if between is not None:
            await between()
        if not token:
            return seen


async def test_insert_is_idempotent_and_pages_in_creation_order(store):
    ids = [f"id{i:02d}" for i in range(7)]
    for i, sid in enumerate(ids):
        record, created = await store.add(sid, f"n{i}", b"png", ("m", "1", np.full(4, i, np.float32)))
        assert created and record.model_versions == ("m:1",) and record.name == f"n{i}"
    again, created = await store.add(ids[0], "other name", b"other png")
    assert not created and again.name == "n0"
    assert await store.image(ids[0]) == b"png"     # the first writer's image stays
    assert await store.count() == 7
    listed = await page_all(store, 3)
    assert listed == [r.id for r in (await store.list(100))[0]]   # pages join into one creation order
    assert sorted(listed) == ids and len(listed) == 7
    created_ms = [r.created_ms for r in (await store.list(100))[0]]
    assert created_ms == sorted(created_ms)
    with pytest.raises(InvalidArgument, match="page_token"):
        await store.list(3, "garbage!")
    assert (await store.list(7))[1] == ""           # an exact last page has no next token


async def test_delete_removes_the_style_and_every_vector(store):
    for sid in ("a", "b", "c"):
        await store.add(sid, sid, b"png", ("m", "1", np.full(4, ord(sid), np.float32)))
    await store.put_vector("b", "m", "2", np.ones(4))
    assert (await store.get("b")).model_versions == ("m:1", "m:2")
    assert await store.delete("b") and not await store.delete("b")
    assert await store.get("b") is None and await store.image("b") is None
    assert await store.vector("b", "m", "1") is None and await store.vector("b", "m", "2") is None
    ids, matrix = await store.vectors("m", "1")
    assert ids == ["a", "c"] and matrix.shape == (2, 4) and matrix.dtype == np.float32
    np.testing.assert_array_equal(matrix[1], np.full(4, ord("c")))
    assert (await store.vectors("m", "2"))[0] == []
    assert await store.count() == 2
    # a vector computed for a style deleted meanwhile is never stored (it would outlive its style)
    await store.put_vector("b", "m", "3", np.ones(4))
    assert await store.vector("b", "m", "3") is None and await store.get("b") is None
    # the same id registered again starts with no vectors
    record, created = await store.add("b", "again", b"png")
    assert created and record.model_versions == ()


async def test_vectors_are_keyed_by_style_model_and_version(store):
    await store.add("s1", "", b"png", ("m", "1", np.arange(4, dtype=np.float32)))
    await store.add("s2", "", b"png")
    assert sorted(await store.missing_vectors("m", "1")) == ["s2"]
    assert sorted(await store.missing_vectors("m", "2")) == ["s1", "s2"]
    assert sorted(await store.missing_vectors("other", "1")) == ["s1", "s2"]
    await store.put_vector("s1", "m", "2", np.full(4, 7, np.float32))
    await store.put_vector("s1", "other", "1", np.full(4, 9, np.float32))
    np.testing.assert_array_equal(await store.vector("s1", "m", "1"), np.arange(4))
    np.testing.assert_array_equal(await store.vector("s1", "m", "2"), np.full(4, 7))
    np.testing.assert_array_equal(await store.vector("s1", "other", "1"), np.full(4, 9))
    assert (await store.get("s1")).model_versions == ("m:1", "m:2", "other:1")
    assert sorted(await store.missing_vectors("m", "2")) == ["s2"]


async def test_concurrent_adds_of_one_style_have_one_winner(make_store):
    # separate connections (Redis) or one serialising thread (SQLite): either way one row wins
    stores = [make_store() for _ in range(4)]
    for s in stores:  # (SQLite: the first one switches the file to WAL)
        await s.open()
    try:
        results = await asyncio.gather(*(stores[i % 4].add("same", f"writer{i}", f"png{i}".encode(),
                                                             ("m", "1", np.full(4, i, np.float32)))
                                         for i in range(16)))
        assert sum(created for _, created in results) == 1
        winner = next(r.name for r, created in results if created)
        assert {r.name for r, _ in results} == {winner}
        i = int(winner.removeprefix("writer"))
        assert await stores[0].image("same") == f"png{i}".encode()
        np.testing.assert_array_equal(await stores[0].vector("same", "m", "1"), np.full(4, i))
        # replicas filling in the same missing vector at once: idempotent, one value stays
        await asyncio.gather(*(s.put_vector("same", "m", "2", np.full(4, 5, np.float32)) for s in stores))
        np.testing.assert_array_equal(await stores[1].vector("same", "m", "2"), np.full(4, 5))
        assert await stores[2].missing_vectors("m", "2") == []
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_pagination_is_stable_while_others_insert_and_delete(make_store):
    reader, writer = make_store(), make_store()
    await reader.open()
    await writer.open()
    try:
        original = [f"orig{i:02d}" for i in range(10)]
        for sid in original:
            await writer.add(sid, sid, b"png")
        added = iter(range(100))

        async def meddle():  # another replica inserts after every page
            await writer.add(f"new{next(added):02d}", "", b"png")

        seen = await page_all(reader, 3, meddle)
        assert len(seen) == len(set(seen)), "a style was listed twice"
        assert [s for s in seen if s.startswith("orig")] == original   # none skipped, in order
        # in creation order, ties (the same millisecond) by id: a style created during the listing
        # comes after every older one
        keys = [((await reader.get(s)).created_ms, s) for s in seen]
        assert keys == sorted(keys)
        assert all(created_ms >= keys[len(original) - 1][0] for created_ms, s in keys if s.startswith("new"))
        # a deleted style vanishes from later pages without shifting the others
        page, token = await reader.list(4)
        await writer.delete(original[5])
        rest = await page_all_from(reader, 4, token)
        assert [r.id for r in page] + [s for s in rest if s.startswith("orig")] == \
            [s for s in original if s != original[5]]
    finally:
        await reader.close()
        await writer.close()


async def page_all_from(lib, size: int, token: str) -> list[str]:
    seen = []
    while token:
        page, token = await lib.list(size, token)
        seen += [r.id for r in page]
    return seen


async def test_stores_are_chosen_by_url_and_redis_credentials_stay_out_of_messages(tmp_path):
    assert isinstance(open_style_store("rediss://example:6380/1"), RedisStyleStore)
    assert isinstance(open_style_store(f"sqlite:///{tmp_path / 's.db'}"), SqliteStyleStore)
    with pytest.raises(ValueError, match="sqlite:///PATH"):
        open_style_store("postgres://db/styles")
    # a wrong password is refused as UNAVAILABLE (retry elsewhere / later) and never echoed
    bad = RedisStyleStore("redis://:wrong-password@127.0.0.1:1/0")
    with pytest.raises(Unavailable) as err:
        await bad.open()
    assert "wrong-password" not in str(err.value) and "***" in str(err.value)
    await bad.close()
