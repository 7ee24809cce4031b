"""The style library in Redis, shared by several replicas (the ``redis`` package's asyncio client).

The same contract as the SQLite library (:mod:`stylecast.server.sqlite_store`; both are a
:class:`~stylecast.server.style_store.StyleStore`):

- ``add`` is atomic and the first writer wins (one Lua script checks and writes);
  ``created_ms`` comes from the Redis server clock, so every replica orders
  styles by one clock.
- Vectors are keyed by (style, model, version); ``put_vector`` writes only for a
  style that still exists and ``delete`` removes the style with all its vectors,
  both atomically, so a vector never outlives its style.
- ``list`` pages by the key (created_ms, id): a page token names the last style
  seen, so styles inserted meanwhile never shift, repeat or skip older ones.

Keys (every key carries the hash tag ``{stylecast}``, so all land in one slot):

=================================  ====  ==========================================
``{stylecast}:style:<id>``         hash  ``name``, ``image`` (PNG), ``created_ms``
``{stylecast}:styles``             zset  ``<created_ms:015d>:<id>``, all scores 0 (lexical order)
``{stylecast}:style:<id>:mv``      set   ``model:version`` pairs with a vector
``{stylecast}:vec:<model>:<version>`` hash  style id → float32 bytes
=================================  ====  ==========================================

A lost connection raises :class:`StoreUnavailable` (gRPC UNAVAILABLE, "retry in a
second", with gRPC's retry pushback); the connection pool reconnects on the next call, so the server never
needs a restart.  Nothing is cached here: a style deleted by another replica is
gone for this one on its next call.
"""

from __future__ import annotations

import functools
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from stylecast.server.errors import StoreUnavailable
from stylecast.server.style_store import StyleRecord, parse_page_token
from stylecast.server.style_store import page_token as token_after

PREFIX = "{stylecast}:"

# KEYS: style, index, mv set, vec hash (or a dummy); ARGV: id, name, image, mv ('' = no vector), vector
_ADD = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'name', ARGV[2], 'image', ARGV[3], 'created_ms', ms)
redis.call('ZADD', KEYS[2], 0, string.format('%015d', ms) .. ':' .. ARGV[1])
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[4], ARGV[1], ARGV[5])
  redis.call('SADD', KEYS[3], ARGV[4])
end
return 1
"""
# KEYS: style, mv set, vec hash; ARGV: id, mv, vector
_PUT_VECTOR = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
redis.call('SADD', KEYS[2], ARGV[2])
return 1
"""
# KEYS: style, index, mv set; ARGV: id, vec key prefix
_DELETE = """
local ms = redis.call('HGET', KEYS[1], 'created_ms')
if not ms then return 0 end
for _, mv in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  redis.call('HDEL', ARGV[2] .. mv, ARGV[1])
end
redis.call('DEL', KEYS[1], KEYS[3])
redis.call('ZREM', KEYS[2], string.format('%015d', tonumber(ms)) .. ':' .. ARGV[1])
return 1
"""


def redacted(url: str) -> str:
    """``url`` without its password (for logs and error messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


def _unavailable(method):
    """Redis failures (connection lost, timeout, loading, read-only) become :class:`StoreUnavailable`."""

    @functools.wraps(method)
    async def wrapper(self: RedisStyleStore, *args, **kwargs):
        import redis.exceptions as rex

        try:
            return await method(self, *args, **kwargs)
        except rex.RedisError as exc:
            raise StoreUnavailable(f"style store {self.name} unavailable ({type(exc).__name__}: {exc}); "
                                   f"retry in {StoreUnavailable.retry_after_s:g} s") from None

    return wrapper


class RedisStyleStore:
    """The style library in one Redis database, shared by every replica pointing at it.

    ``url``: ``redis://[[user]:password@]host:port/db`` or ``rediss://…`` (TLS; ``ssl_ca_certs``
    and the other redis-py options may follow as query parameters).  ``password`` is used when
    the URL has none.
    """

    def __init__(self, url: str, password: str = "", *,
                 connect_timeout_s: float = 3.0, timeout_s: float = 5.0) -> None:
        import redis.asyncio as aioredis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.name = redacted(url)
        password = None if urlsplit(url).password else password or None
        # One immediate reconnect per command covers a pooled socket that died with an old
        # Redis process; anything longer is the client's retry policy's job (UNAVAILABLE).
        self._redis = aioredis.from_url(url, password=password, socket_connect_timeout=connect_timeout_s,
                                        socket_timeout=timeout_s, retry=Retry(NoBackoff(), 1),
                                        health_check_interval=15, decode_responses=False)
        self._add = self._redis.register_script(_ADD)
        self._put_vector = self._redis.register_script(_PUT_VECTOR)
        self._delete = self._redis.register_script(_DELETE)

    # ------------------------------------------------------------------ keys

    @staticmethod
    def _style_key(style_id: str) -> str:
        return f"{PREFIX}style:{style_id}"

    @staticmethod
    def _mv_key(style_id: str) -> str:
        return f"{PREFIX}style:{style_id}:mv"

    @staticmethod
    def _vec_key(model: str, version: str) -> str:
        return f"{PREFIX}vec:{model}:{version}"

    _INDEX = f"{PREFIX}styles"

    # ------------------------------------------------------------- lifecycle

    @_unavailable
    async def open(self) -> None:
        """Check that the server answers (raises :class:`StoreUnavailable` when it does not)."""
        await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose()

    # ----------------------------------------------------------------- styles

    @_unavailable
    async def add(self, style_id: str, name: str, image_png: bytes,
                  vector: tuple[str, str, np.ndarray] | None = None) -> tuple[StyleRecord, bool]:
        """Insert a style (and optionally its vector) if new; return it and whether it was created."""
        if vector is None:
            mv, vec_key, blob = "", self._INDEX, b""
        else:
            model, version, vec = vector
            mv, vec_key, blob = f"{model}:{version}", self._vec_key(model, version), _blob(vec)
        created = await self._add(keys=[self._style_key(style_id), self._INDEX, self._mv_key(style_id), vec_key],
                                  args=[style_id, name, image_png, mv, blob])
        record = await self.get(style_id)
        if record is None:  # deleted by another replica in between
            raise StoreUnavailable(f"style {style_id} was deleted by another call while being registered; retry")
        return record, created == 1

    @_unavailable
    async def get(self, style_id: str) -> StyleRecord | None:
        return (await self._records([style_id]))[0]

    async def _records(self, ids: list[str]) -> list[StyleRecord | None]:
        """Records of ``ids`` (None for missing ones) read in one MULTI/EXEC snapshot."""
        async with self._redis.pipeline(transaction=True) as pipe:
            for sid in ids:
                pipe.hmget(self._style_key(sid), "name", "created_ms")
                pipe.smembers(self._mv_key(sid))
            replies = await pipe.execute()
        out = []
        for sid, (name, created), mvs in zip(ids, replies[0::2], replies[1::2]):
            if created is None:
                out.append(None)
                continue
            versions = sorted((m.decode() for m in mvs), key=lambda s: s.partition(":")[::2])
            out.append(StyleRecord(sid, name.decode(), int(created), tuple(versions)))
        return out

    @_unavailable
    async def image(self, style_id: str) -> bytes | None:
        """The stored normalised style image (PNG), or None."""
        return await self._redis.hget(self._style_key(style_id), "image")

    @_unavailable
    async def list(self, page_size: int, page_token: str = "") -> tuple[list[StyleRecord], str]:
        """One page in creation order and the token of the next page ("" at the end)."""
        start = "-"
        if page_token:
            created, after = parse_page_token(page_token)
            start = f"({created:015d}:{after}"
        members = await self._redis.zrange(self._INDEX, start, "+", bylex=True, offset=0, num=page_size + 1)
        ids = [m.decode().split(":", 1)[1] for m in members[:page_size]]
        records = [r for r in await self._records(ids) if r is not None] if ids else []
        if len(members) <= page_size or not ids:
            return records, ""
        created, last = members[page_size - 1].decode().split(":", 1)
        return records, token_after(StyleRecord(last, "", int(created)))

    @_unavailable
    async def count(self) -> int:
        return await self._redis.zcard(self._INDEX)

    @_unavailable
    async def delete(self, style_id: str) -> bool:
        return await self._delete(keys=[self._style_key(style_id), self._INDEX, self._mv_key(style_id)],
                                  args=[style_id, f"{PREFIX}vec:"]) == 1

    # ---------------------------------------------------------------- vectors

    @_unavailable
    async def put_vector(self, style_id: str, model: str, version: str, vector: np.ndarray) -> None:
        """Store (or replace) a vector; a no-op when the style no longer exists."""
        await self._put_vector(keys=[self._style_key(style_id), self._mv_key(style_id), self._vec_key(model, version)],
                               args=[style_id, f"{model}:{version}", _blob(vector)])

    @_unavailable
    async def vector(self, style_id: str, model: str, version: str) -> np.ndarray | None:
        blob = await self._redis.hget(self._vec_key(model, version), style_id)
        return None if blob is None else np.frombuffer(blob, np.float32)

    @_unavailable
    async def vectors(self, model: str, version: str) -> tuple[list[str], np.ndarray]:
        """All style ids with a vector for this model version, and the N×D float32 matrix."""
        rows = sorted((await self._redis.hgetall(self._vec_key(model, version))).items())
        if not rows:
            return [], np.zeros((0, 0), np.float32)
        return [k.decode() for k, _ in rows], np.stack([np.frombuffer(v, np.float32) for _, v in rows])

    @_unavailable
    async def missing_vectors(self, model: str, version: str) -> list[str]:
        """Ids of styles without a vector for this model version."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zrange(self._INDEX, 0, -1)
            pipe.hkeys(self._vec_key(model, version))
            members, have = await pipe.execute()
        have = set(have)
        return [m.split(b":", 1)[1].decode() for m in members if m.split(b":", 1)[1] not in have]


def _blob(vector: np.ndarray) -> bytes:
    return np.asarray(vector, np.float32).tobytes()
