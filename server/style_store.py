"""The style store seam: what the server needs from wherever styles live.

A style is a normalised 256×256 RGB image (stored as PNG) under its id (the sha256 of
its pixels), with a name and a creation time.  Each model version computes its own
D-float32 vector of a style; vectors are keyed by (style id, model, version).
:class:`~stylecast.server.sqlite_store.SqliteStyleStore` implements it on one SQLite file;
a shared store (Redis) implements the same methods.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from stylecast.server.errors import InvalidArgument


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
    """(created_ms, id) of a :func:`page_token`; raises :class:`InvalidArgument` if malformed."""
    try:
        created, style_id = base64.urlsafe_b64decode(token.encode()).decode().split(":", 1)
        return int(created), style_id
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument("invalid page_token: pass the next_page_token of a previous ListStyles") from None
