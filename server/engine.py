"""The composition root: builds the server's parts, wires each to what it uses, starts and stops them.

::

    ModelRegistry ─┐
    Metrics ───────┼─▶ ServingSlot ◀── Loader ◀── ModelControl   (ModelAdmin)
    StyleStore ────┴─▶ StyleVectors ◀─ Sessions                   (StyleTransfer)
    CodecPool ─────────────┘              ┘ └─▶ QualitySampler    (online quality)

The slot holds the loaded versions and the traffic split between them; the loader fills it
(``StyleVectors.prepare`` gives a new version its style vectors first); sessions stylize frames
on the version assigned to them and offer a sample to the quality sampler.
"""

from __future__ import annotations

from dataclasses import dataclass

from stylecast.server.codecs import CodecPool
from stylecast.server.config import REDIS_SCHEMES, SQLITE, ServerConfig, check_style_store
from stylecast.server.loader import Loader
from stylecast.server.metrics import Metrics
from stylecast.server.model_control import ModelControl
from stylecast.server.online_quality import QualitySampler
from stylecast.server.packages import load_order
from stylecast.server.registry import ModelRegistry
from stylecast.server.serving import ServingSlot
from stylecast.server.session import Sessions
from stylecast.server.sqlite_store import SqliteStyleStore
from stylecast.server.style_store import StyleStore
from stylecast.server.style_vectors import StyleVectors


def open_style_store(url: str, redis_password: str = "") -> StyleStore:
    """The (not yet opened) store a ``style_store`` URL names: SQLite for ``sqlite:///PATH``
    (``sqlite:////abs`` or ``sqlite:///rel``), Redis for ``redis://`` and ``rediss://`` (TLS) with
    the password from the URL, else ``redis_password``.  Raises ValueError for anything else."""
    check_style_store(url)
    if url.startswith(REDIS_SCHEMES):
        from stylecast.server.redis_store import RedisStyleStore

        return RedisStyleStore(url, redis_password)
    return SqliteStyleStore(url[len(SQLITE):])


@dataclass
class Engine:
    """The wired parts; :meth:`create` builds them and serves the first artifact."""

    config: ServerConfig
    metrics: Metrics
    registry: ModelRegistry
    slot: ServingSlot
    codecs: CodecPool
    styles: StyleVectors
    loader: Loader
    sessions: Sessions
    control: ModelControl
    quality: QualitySampler

    @classmethod
    async def create(cls, config: ServerConfig, metrics: Metrics | None = None,
                     store: StyleStore | None = None) -> Engine:
        """Open the style store (``config.style_store``: SQLite or Redis), find the package
        (latest version) and serve the first artifact of its load order; the rest load in the
        background.  With ``config.traffic_split`` every version it names is loaded (the default
        first, the others alongside) and the split is set before serving starts."""
        metrics = metrics if metrics is not None else Metrics()
        registry = ModelRegistry(config)
        default, *others = config.split_versions
        package = registry.find(config.model, default)
        store = store if store is not None else open_style_store(config.style_store, config.redis_password)
        await store.open()
        slot = ServingSlot(config, metrics, registry)
        codec_pool = CodecPool(config.codec_threads)
        styles = StyleVectors(config, store, slot, codec_pool, metrics)
        loader = Loader(config, metrics, registry, slot, styles.prepare)
        quality = QualitySampler(config.quality_sample_every, metrics, slot, store)
        control = ModelControl(config, registry, slot, loader)
        engine = cls(config, metrics, registry, slot, codec_pool, styles, loader,
                     Sessions(config, slot, styles, codec_pool, metrics, quality), control, quality)
        try:
            metrics.styles.set(await store.count())
            await loader.load(package, load_order(config, package))
            if others:
                await control.load_alongside(package.name, others)
                await control.set_split(package.name, config.split_weights)
        except BaseException:
            await engine.close()
            raise
        return engine

    async def close(self) -> None:
        """Stop loading and scoring, close every model, the style store and the threads."""
        await self.loader.close()
        await self.quality.close()
        await self.slot.close()
        await self.styles.store.close()
        self.codecs.close()
