"""The style store seam: what the server needs from wherever styles live.

A style is a normalised 256×256 RGB image (stored as PNG) under its id (the sha256 of
its pixels), with a name and a creation time.  Each model version computes its own
D-float32 vector of a style; vectors are keyed by (style id, model, version).
:class:`~stylecast.server.sqlite_store.SqliteStyleStore` implements it on one SQLite file,
:class:`~stylecast.server.redis_store.RedisStyleStore` in Redis, shared by several replicas;
:func:`~stylecast.server.engine.open_style_store` picks one by URL.
"""

from __future__ import annotations

import base64
import unicodedata
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from stylecast.server.errors import InvalidArgument


MAX_NAME_CHARS = 256   # a style name; longer ones are refused (and older stored ones cut on the wire)
PAGE_BYTES = 1 << 20   # a ListStyles page stops growing past about this many bytes of records


@dataclass(frozen=True)
class StyleRecord:
    id: str
    name: str
    created_ms: int                                     # Unix time, milliseconds
    model_versions: tuple[str, ...] = field(default=())  # "model:version" holding a vector, sorted


@runtime_checkable
class StyleStore(Protocol):
    """Every method is a coroutine and safe to call concurrently from the event loop; a write
    is durable before it returns."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def add(self, style_id: str, name: str, image_png: bytes,
                  vector: tuple[str, str, np.ndarray] | None = None) -> tuple[StyleRecord, bool]:
        """Insert a style and optionally one (model, version, vector), atomically, if the id is
        new: the first writer wins and a repeat changes nothing.  → (the stored record, created)."""

    async def get(self, style_id: str) -> StyleRecord | None: ...

    async def image(self, style_id: str) -> bytes | None:
        """The stored normalised style image (PNG), or None."""

    async def list(self, page_size: int, page_token: str = "") -> tuple[list[StyleRecord], str]:
        """One page in creation order (ties by id) and the next page's token ("" at the end).
        Raises :class:`InvalidArgument` for a token this store did not issue."""

    async def count(self) -> int: ...

    async def delete(self, style_id: str) -> bool:
        """Remove a style and all its vectors; False if there was none."""

    async def put_vector(self, style_id: str, model: str, version: str, vector: np.ndarray) -> None:
        """Store a model version's vector of a stored style (nothing if the style is gone)."""

    async def vector(self, style_id: str, model: str, version: str) -> np.ndarray | None: ...

    async def vectors(self, model: str, version: str) -> tuple[list[str], np.ndarray]:
        """Ids with a vector for this model version (sorted) and their N×D float32 matrix."""

    async def missing_vectors(self, model: str, version: str) -> list[str]:
        """Ids of stored styles without a vector for this model version."""


def page_token(record: StyleRecord) -> str:
    """The opaque token of the page after ``record`` (creation time, then id)."""
    return base64.urlsafe_b64encode(f"{record.created_ms}:{record.id}".encode()).decode()


def parse_page_token(token: str) -> tuple[int, str]:
    """(created_ms, id) of a :func:`page_token`; raises :class:`InvalidArgument` if malformed
    (also for a time outside 0..2⁶³−1, which no store can hold, or an over-long token)."""
    invalid = InvalidArgument("invalid page_token: pass the next_page_token of a previous ListStyles")
    if len(token) > 256:
        raise invalid
    try:
        created, style_id = base64.urlsafe_b64decode(token.encode()).decode().split(":", 1)
        created_ms = int(created)
    except (ValueError, UnicodeDecodeError):
        raise invalid from None
    if not 0 <= created_ms < 1 << 63 or len(style_id) > 128:
        raise invalid
    return created_ms, style_id


def check_style_name(name: str) -> str:
    """A style's display name: at most :data:`MAX_NAME_CHARS` characters, no control or format
    characters; raises :class:`InvalidArgument`."""
    if len(name) > MAX_NAME_CHARS:
        raise InvalidArgument(f"style name is {len(name)} characters; at most {MAX_NAME_CHARS} are allowed")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in name):
        raise InvalidArgument("style name contains control or format characters; use printable text")
    return name


def bounded_page(records: list[StyleRecord], next_token: str) -> tuple[list[StyleRecord], str]:
    """Cut a page once its records pass :data:`PAGE_BYTES` (at least one record stays); the
    token then points after the last record kept."""
    size = 0
    for i, record in enumerate(records):
        size += len(record.id) + 4 * len(record.name) + sum(len(v) + 4 for v in record.model_versions) + 32
        if size > PAGE_BYTES and i + 1 < len(records):
            return records[:i + 1], page_token(records[i])
    return records, next_token
