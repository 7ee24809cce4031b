"""Styles and their vectors: register, get, delete, search and blend through a :class:`StyleStore`.

Each model version has its own vector of a style, computed by its style predictor from
the stored normalised image: on registration (by the serving model), for every stored
style before a new version serves (:meth:`StyleVectors.prepare`), and on first use
otherwise.  Nothing is cached in the process: the store is the one truth, shared by every
replica when it is Redis (a stream resolves its vectors once per StreamConfig).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from concurrent.futures import Executor

import numpy as np
from PIL import Image

from stylecast.model.preprocess import style_image_uint8, to_float
from stylecast.server import codecs
from stylecast.server.codecs import CodecPool, ImageInput
from stylecast.server.config import ServerConfig
from stylecast.server.errors import InvalidArgument, NotFound
from stylecast.server.loaded_model import LoadedModel
from stylecast.server.metrics import Metrics
from stylecast.server.serving import ServingSlot
from stylecast.server.style_store import StyleRecord, StyleStore, bounded_page, check_style_name

THUMBNAIL_SIDE = 128


def png_bytes(image: np.ndarray) -> bytes:
    """H×W×3 uint8 → PNG."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    return buf.getvalue()


def nearest(query: np.ndarray, ids: list[str], matrix: np.ndarray, limit: int,
            exclude: str | None = None) -> list[tuple[str, float]]:
    """Top ``limit`` ids by cosine similarity (in [-1, 1]) after centring by the mean stored vector."""
    if not ids:
        return []
    mean = matrix.mean(axis=0)
    m, q = matrix - mean, np.asarray(query, np.float32) - mean
    norms = np.linalg.norm(m, axis=1) * np.linalg.norm(q)
    scores = np.divide(m @ q, norms, out=np.zeros(len(ids), np.float32), where=norms > 1e-12)
    order = [i for i in np.argsort(-scores, kind="stable") if ids[i] != exclude]
    return [(ids[i], float(scores[i])) for i in order[:limit]]


class StyleVectors:
    """The styles of a :class:`StyleStore` (``store``) and their vectors by the slot's models."""

    def __init__(self, config: ServerConfig, store: StyleStore, slot: ServingSlot, codec_pool: CodecPool,
                 metrics: Metrics) -> None:
        self.store = store
        self._max_pixels = config.max_pixels
        self._slot, self._codecs, self._metrics = slot, codec_pool, metrics

    def _decode_stored(self, png: bytes) -> np.ndarray:
        rgb, _ = codecs.decode(png, max_pixels=self._max_pixels)
        return rgb

    def _normalise(self, image: ImageInput) -> np.ndarray:
        rgb, _ = codecs.decode(image.data, image.pixel_format, image.width, image.height,
                               max_pixels=self._max_pixels)
        return style_image_uint8(Image.fromarray(rgb))

    async def prepare(self, model: LoadedModel, executor: Executor) -> None:
        """Compute ``model``'s vector of every stored style that lacks one (from the stored
        normalised images), before it serves; runs its style predictor on ``executor``."""
        loop = asyncio.get_running_loop()
        for style_id in await self.store.missing_vectors(*model.key):
            png = await self.store.image(style_id)
            if png is None:  # deleted meanwhile
                continue
            batch = to_float((await self._codecs.run(self._decode_stored, png))[None])
            vector = np.asarray(await loop.run_in_executor(executor, model.backend.predict_style, batch),
                                np.float32).reshape(-1)
            await self.store.put_vector(style_id, *model.key, vector)

    # ------------------------------------------------------------------ styles

    async def register(self, image: ImageInput, name: str) -> tuple[StyleRecord, bool]:
        """Store a style (id = sha256 of its normalised pixels) and every loaded version's vector
        of it (the default version's with the style, the others' right after); idempotent.  → (the record, whether it was created).  Raises InvalidArgument for
        a name over 256 characters or with control characters, before any work."""
        check_style_name(name)
        normalised = await self._codecs.run(self._normalise, image)
        style_id = hashlib.sha256(normalised.tobytes()).hexdigest()
        existing = await self.store.get(style_id)
        if existing is not None:
            return existing, False
        model = self._slot.model
        with model.lease():
            vector = await self._slot.predict(normalised, model)
            png = await self._codecs.run(png_bytes, normalised)
            record, created = await self.store.add(style_id, name, png, (*model.key, vector))
        if created:
            for other in self._slot.loaded():  # versions serving next to it (a traffic split)
                if other.key != model.key:
                    await self.store.put_vector(style_id, *other.key, await self._slot.predict(normalised, other))
            self._metrics.styles.set(await self.store.count())  # a shared store: other replicas add too
        return record, created

    async def get(self, style_id: str) -> StyleRecord:
        """Raises :class:`NotFound` for an unknown id."""
        record = await self.store.get(style_id)
        if record is None:
            raise NotFound(f"style {style_id!r} not found; register it with RegisterStyle first")
        return record

    async def list(self, page_size: int, page_token: str = "") -> tuple[list[StyleRecord], str]:
        """One page in creation order and the next page's token ("" at the end): at most
        ``page_size`` records, fewer past :data:`PAGE_BYTES`."""
        return bounded_page(*await self.store.list(page_size, page_token))

    async def delete(self, style_id: str) -> bool:
        """Delete a style and its vectors; False if there was none."""
        deleted = await self.store.delete(style_id)
        if deleted:
            self._metrics.styles.set(await self.store.count())
        return deleted

    async def thumbnail(self, style_id: str) -> bytes:
        """A 128×128 JPEG of the stored style image; raises :class:`NotFound`."""
        png = await self.store.image(style_id)
        if png is None:
            raise NotFound(f"style {style_id!r} not found")

        def encode() -> bytes:
            rgb = self._decode_stored(png)
            return codecs.encode(codecs.resize(rgb, (THUMBNAIL_SIDE, THUMBNAIL_SIDE)), "jpeg", 85)

        return await self._codecs.run(encode)

    # ----------------------------------------------------------------- vectors

    async def vector(self, style_id: str, model: LoadedModel | None = None) -> np.ndarray:
        """A model's D float32 vector of a stored style (the serving model by default), computed
        and stored on first use; raises :class:`NotFound` for an unknown id.  Always read from
        the store, never from a process cache: a style another replica deleted is NotFound here
        too (a stream keeps the vectors its StreamConfig resolved)."""
        model = model or self._slot.model
        vec = await self.store.vector(style_id, *model.key)
        if vec is None:
            png = await self.store.image(style_id)
            if png is None:
                raise NotFound(f"style {style_id!r} not found; register it with RegisterStyle first")
            vec = await self._slot.predict(await self._codecs.run(self._decode_stored, png), model)
            await self.store.put_vector(style_id, *model.key, vec)
        return vec

    async def blend(self, weights: tuple[tuple[str, float], ...], model: LoadedModel | None = None) -> np.ndarray:
        """Σ wᵢ·vᵢ (D float32) with the weights normalised to sum to 1; raises
        :class:`InvalidArgument` for no style or weights that are negative or sum to 0."""
        if not weights:
            raise InvalidArgument("no style given: set StreamConfig.style_id or a non-empty blend")
        w = np.array([wt for _, wt in weights], np.float64)
        if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise InvalidArgument(f"blend weights must be >= 0 with a positive sum, got {w.tolist()}")
        model = model or self._slot.model
        vectors = [await self.vector(sid, model) for sid, _ in weights]
        return (np.tensordot(w / w.sum(), np.stack(vectors), axes=1)).astype(np.float32)

    async def search(self, *, style_id: str = "", image: ImageInput | None = None, limit: int = 10,
                     model_name: str = "") -> list[tuple[StyleRecord, float]]:
        """Stored styles nearest to a stored style (itself excluded) or to an image's style,
        by the serving model's vectors (``model_name``, if set, must be the served one), best
        first, with their scores."""
        self._slot.check_model(model_name)
        model = self._slot.model
        if style_id:
            query = await self.vector(style_id, model)
        elif image is not None:
            query = await self._slot.predict(await self._codecs.run(self._normalise, image), model)
        else:
            raise InvalidArgument("SearchStyles needs a style_id or an image")
        for missing in await self.store.missing_vectors(*model.key):
            await self.vector(missing, model)
        ids, matrix = await self.store.vectors(*model.key)
        out = []
        for sid, score in nearest(query, ids, matrix, limit, exclude=style_id or None):
            if (record := await self.store.get(sid)) is not None:
                out.append((record, score))
        return out
