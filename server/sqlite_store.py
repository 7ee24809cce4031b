"""The style store in SQLite: normalised style images and their vectors per model version.

Every database call runs on one dedicated thread (a single-worker executor), so
the event loop never blocks and the connection is never shared across threads.
WAL with ``synchronous=FULL``: a style is committed durably before any caller
acknowledges it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from stylecast.server.config import ConfigError
from stylecast.server.style_store import StyleRecord, page_token, parse_page_token

_SCHEMA = """
CREATE TABLE IF NOT EXISTS style (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    image BLOB NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS style_created ON style (created_ms, id);
CREATE TABLE IF NOT EXISTS vector (
    style_id TEXT NOT NULL REFERENCES style (id) ON DELETE CASCADE,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (style_id, model, version)
);
"""


class SqliteStyleStore:
    """The :class:`StyleStore` on one SQLite file; every method runs on the database thread."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="stylecast-db")
        self._db: sqlite3.Connection | None = None

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def open(self) -> None:
        """Create or open the database file; raises ConfigError naming the path when SQLite cannot
        (the folder is a file, not writable, …)."""
        try:
            await self._run(self._open)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"style_store sqlite:///{self.path}: cannot open it ({exc}); choose a writable "
                              "path") from None

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None)  # explicit transactions below
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        db.executescript(_SCHEMA)
        self._db = db

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._executor.shutdown(wait=True)

    def _tx(self, sql_params: list[tuple[str, tuple]]) -> list[int]:
        assert self._db is not None, "SqliteStyleStore.open() first"
        with self._db:  # sqlite3 commits (durably: synchronous=FULL) or rolls back
            self._db.execute("BEGIN IMMEDIATE")
            return [self._db.execute(sql, params).rowcount for sql, params in sql_params]

    def _record(self, row: tuple) -> StyleRecord:
        style_id, name, created = row
        versions = tuple(f"{m}:{v}" for m, v in self._db.execute(
            "SELECT model, version FROM vector WHERE style_id = ? ORDER BY model, version", (style_id,)))
        return StyleRecord(style_id, name, created, versions)

    # ------------------------------------------------------------------ styles

    async def add(self, style_id: str, name: str, image_png: bytes,
                  vector: tuple[str, str, np.ndarray] | None = None) -> tuple[StyleRecord, bool]:
        """Insert a style (and optionally its vector) if new; return it and whether it was created."""
        return await self._run(self._add, style_id, name, image_png, vector)

    def _add(self, style_id, name, image_png, vector):
        stmts = [("INSERT OR IGNORE INTO style (id, name, image, created_ms) VALUES (?, ?, ?, ?)",
                  (style_id, name, image_png, int(time.time() * 1000)))]
        if vector is not None:
            model, version, vec = vector
            stmts.append(("INSERT OR IGNORE INTO vector VALUES (?, ?, ?, ?)",
                          (style_id, model, version, np.asarray(vec, np.float32).tobytes())))
        created = self._tx(stmts)[0] == 1
        return self._get(style_id), created

    async def get(self, style_id: str) -> StyleRecord | None:
        return await self._run(self._get, style_id)

    def _get(self, style_id):
        row = self._db.execute("SELECT id, name, created_ms FROM style WHERE id = ?", (style_id,)).fetchone()
        return self._record(row) if row else None

    async def image(self, style_id: str) -> bytes | None:
        """The stored normalised style image (PNG), or None."""
        return await self._run(self._image, style_id)

    def _image(self, style_id):
        row = self._db.execute("SELECT image FROM style WHERE id = ?", (style_id,)).fetchone()
        return row[0] if row else None

    async def list(self, page_size: int, page_token: str = "") -> tuple[list[StyleRecord], str]:
        """One page in creation order and the token of the next page ("" at the end)."""
        after = parse_page_token(page_token) if page_token else (-1, "")
        return await self._run(self._list, page_size, after)

    def _list(self, page_size, after):
        rows = self._db.execute(
            "SELECT id, name, created_ms FROM style WHERE (created_ms, id) > (?, ?) "
            "ORDER BY created_ms, id LIMIT ?", (*after, page_size + 1)).fetchall()
        records = [self._record(r) for r in rows[:page_size]]
        return records, (page_token(records[-1]) if len(rows) > page_size else "")

    async def count(self) -> int:
        return await self._run(lambda: self._db.execute("SELECT COUNT(*) FROM style").fetchone()[0])

    async def delete(self, style_id: str) -> bool:
        return await self._run(lambda: self._tx([("DELETE FROM style WHERE id = ?", (style_id,))])[0] == 1)

    # ----------------------------------------------------------------- vectors

    async def put_vector(self, style_id: str, model: str, version: str, vector: np.ndarray) -> None:
        blob = np.asarray(vector, np.float32).tobytes()
        await self._run(self._tx, [("INSERT OR REPLACE INTO vector SELECT id, ?, ?, ? FROM style WHERE id = ?",
                                    (model, version, blob, style_id))])

    async def vector(self, style_id: str, model: str, version: str) -> np.ndarray | None:
        row = await self._run(lambda: self._db.execute(
            "SELECT vector FROM vector WHERE style_id = ? AND model = ? AND version = ?",
            (style_id, model, version)).fetchone())
        return np.frombuffer(row[0], np.float32) if row else None

    async def vectors(self, model: str, version: str) -> tuple[list[str], np.ndarray]:
        """All style ids with a vector for this model version, and the N×D matrix."""
        rows = await self._run(lambda: self._db.execute(
            "SELECT style_id, vector FROM vector WHERE model = ? AND version = ? ORDER BY style_id",
            (model, version)).fetchall())
        if not rows:
            return [], np.zeros((0, 0), np.float32)
        return [r[0] for r in rows], np.stack([np.frombuffer(r[1], np.float32) for r in rows])

    async def missing_vectors(self, model: str, version: str) -> list[str]:
        """Ids of styles without a vector for this model version."""
        rows = await self._run(lambda: self._db.execute(
            "SELECT id FROM style WHERE id NOT IN "
            "(SELECT style_id FROM vector WHERE model = ? AND version = ?)", (model, version)).fetchall())
        return [r[0] for r in rows]

