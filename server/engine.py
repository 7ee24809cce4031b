"""The composition root: builds the server's parts, wires each to what it uses, starts and stops them.

::

    ModelRegistry ─┐
    Metrics ───────┼─▶ ServingSlot ◀── Loader ◀── ModelControl   (ModelAdmin)
    StyleStore ────┴─▶ StyleVectors ◀─ Sessions                   (StyleTransfer)
    CodecPool ─────────────┘              ┘

The slot holds the serving model; the loader fills it (``StyleVectors.prepare`` gives a
new version its style vectors first); sessions stylize frames on it.
"""

from __future__ import annotations

from dataclasses import dataclass

from stylecast.server.codecs import CodecPool
from stylecast.server.config import ServerConfig
from stylecast.server.loader import Loader
from stylecast.server.metrics import Metrics
from stylecast.server.model_control import ModelControl
from stylecast.server.packages import load_order
from stylecast.server.registry import ModelRegistry
from stylecast.server.serving import ServingSlot
from stylecast.server.session import Sessions
from stylecast.server.sqlite_store import SqliteStyleStore
from stylecast.server.style_store import StyleStore
from stylecast.server.style_vectors import StyleVectors


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

    @classmethod
    async def create(cls, config: ServerConfig, metrics: Metrics | None = None,
                     store: StyleStore | None = None) -> Engine:
        """Open the style store (SQLite at ``config.styles_db`` by default), find the package
        (latest version) and serve the first artifact of its load order; the rest load in the
        background."""
        metrics = metrics if metrics is not None else Metrics()
        registry = ModelRegistry(config)
        package = registry.find(config.model, config.model_version)
        order = load_order(config, package)
        store = store if store is not None else SqliteStyleStore(config.styles_db)
        await store.open()
        slot = ServingSlot(config, metrics, registry)
        codec_pool = CodecPool(config.codec_threads)
        styles = StyleVectors(config, store, slot, codec_pool, metrics)
        loader = Loader(config, metrics, registry, slot, styles.prepare)
        engine = cls(config, metrics, registry, slot, codec_pool, styles, loader,
                     Sessions(config, slot, styles, codec_pool), ModelControl(config, registry, slot, loader))
        try:
            metrics.styles.set(await store.count())
            await loader.load(package, order)
        except BaseException:
            await engine.close()
            raise
        return engine

    async def close(self) -> None:
        """Stop loading, close every model, the style store and the threads."""
        await self.loader.close()
        await self.slot.close()
        await self.styles.store.close()
        self.codecs.close()
