"""Model control: the policy behind ModelAdmin — upload, load, unload, list and watch packages.

Checks what may be loaded or removed (never the only serving version, never the models folder),
turns load orders into (backend, format) entries and drives the :class:`Loader`; sets traffic
splits between loaded versions (A/B tests) and drains a version being unloaded.  Reading and
writing package files runs in threads; the event loop only lists folders to find
whether a package is installed or being uploaded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from stylecast.backends.base import backend_formats, backend_names, is_installed, unavailable
from stylecast.backends.package import ModelPackage
from stylecast.server.config import ConfigError, ServerConfig, parse_load_order
from stylecast.server.errors import FailedPrecondition, InvalidArgument, NotFound
from stylecast.server.loader import Loader
from stylecast.server.packages import load_order
from stylecast.server.registry import ModelRegistry, ModelStatus, UploadProgress
from stylecast.server.serving import ServingSlot
from stylecast.server.traffic import check_split

Chunk = tuple[str, int, bytes]  # (file path in the package, chunk index, data)


@dataclass(frozen=True)
class BackendStatus:
    name: str
    installed: bool
    formats: tuple[str, ...]
    serving: bool
    unavailable: str  # why it cannot run here; "" when it can


@dataclass(frozen=True)
class VersionTraffic:
    version: str
    percent: int        # share of new streams and calls
    open_streams: int
    draining: bool
    backend: str
    format: str


class ModelControl:
    """ModelAdmin's operations over the registry, the serving slot and the loader."""

    def __init__(self, config: ServerConfig, registry: ModelRegistry, slot: ServingSlot, loader: Loader) -> None:
        self._config, self._registry, self._slot, self._loader = config, registry, slot, loader
        self._uploads = registry.uploads

    async def upload(self, manifest: bytes, chunks: AsyncIterator[Chunk]
                     ) -> AsyncIterator[tuple[tuple[str, str], UploadProgress]]:
        """Receive a package: yields ((name, version), progress) once the manifest is accepted
        (listing the chunks still missing) and once every chunk has verified.  An identical package
        already installed is answered complete (``already_installed``) and keeps its state."""
        upload = await asyncio.to_thread(self._uploads.begin, manifest, self._registry.installed)
        try:
            yield upload.key, UploadProgress.of(upload, with_missing=True)
            async for path, index, data in chunks:
                await asyncio.to_thread(self._uploads.put, upload, path, index, data)
            await asyncio.to_thread(self._uploads.finish, upload)
        finally:
            self._uploads.release(upload.key)
        if not upload.already_installed:
            self._registry.forget(*upload.key)  # a failed earlier load of the same key is history
        yield upload.key, UploadProgress.of(upload)

    async def load(self, name: str, version: str, requested_order: Sequence[str] = ()) -> ModelStatus:
        """Serve ``name`` (the served model's name if "") at ``version`` (latest if ""), loading
        ``requested_order`` ("backend:format" entries; the config's order if empty)."""
        name = name or self._slot.model.package.name
        package = await asyncio.to_thread(self._find_loadable, name, version)
        try:
            requested = parse_load_order(requested_order)
        except ConfigError as exc:
            raise InvalidArgument(str(exc)) from None
        await self._loader.load(package, load_order(self._config, package, requested))
        return self._registry.status(package)

    async def unload(self, name: str, version: str, delete_files: bool) -> tuple[bool, bool, bool, int]:
        """Stop loading a version in the background and forget its state; a version serving next
        to others stops taking new streams and closes once its open ones end; with ``delete_files``
        also delete an uploaded package.  → (a background load was stopped, files were deleted,
        it was serving and now drains, streams still open on the draining version)."""
        if not name or not version:
            raise InvalidArgument("UnloadModel needs a model name and version")
        if self._slot.version(name, version) is not None:
            if delete_files:
                raise FailedPrecondition(f"model {name}:{version} is serving; unload it first, then delete its files")
            draining = self._slot.drain((name, version))  # raises when it is the only version
            stopped = await self._loader.stop_background((name, version))
            return stopped, False, True, draining
        installed, partial = await asyncio.to_thread(self._on_disk, name, version)
        if installed is None and not partial:
            raise NotFound(f"model {name}:{version} is neither installed nor being uploaded")
        unloaded = await self._loader.stop_background((name, version))
        deleted = False
        if delete_files:
            if installed is not None and not self._registry.is_uploaded(installed):
                raise FailedPrecondition(f"model {name}:{version} is in the models folder "
                                         f"{self._registry.models_root}, which the server never deletes from")
            deleted = await asyncio.to_thread(self._uploads.delete, name, version)
        self._registry.forget(name, version)
        return unloaded, deleted, False, 0

    async def statuses(self, name: str = "") -> list[ModelStatus]:
        """Every package on disk (of model ``name``, if set) and every interrupted upload."""
        return await asyncio.to_thread(self._registry.statuses, name)

    async def watch(self, name: str, version: str) -> AsyncIterator[ModelStatus]:
        """A package's status now and after every change until nothing of it is loading; by
        default the served model, at the version loading in the background or else serving."""
        current = self._slot.model
        name = name or current.package.name
        version = version or self._loader.loading_version(name) or (
            current.package.version if name == current.package.name else "")
        package = await asyncio.to_thread(self._registry.find, name, version)
        async for status in self._registry.watch(package):
            yield status

    async def set_split(self, name: str, weights: dict[str, int]) -> list[VersionTraffic]:
        """Share new streams and calls of the served model (``name`` "" = it) between versions by
        ``weights`` (version → percent, summing to 100); installed versions with weight that are
        not loaded are loaded first, next to the serving ones (with their style vectors).  Raises
        :class:`~stylecast.server.errors.InvalidSplit` for an unknown version or bad weights
        (nothing changes), ``LoadFailed`` when a version fails to load (the split stays as it was)."""
        name = self._served(name)
        installed = await asyncio.to_thread(self._registry.versions, name)
        weights = check_split(weights, installed, name)
        for version, percent in weights.items():  # every package is sound before any loads
            if percent > 0 and self._slot.version(name, version) is None:
                await asyncio.to_thread(self._registry.find, name, version)
        await self.load_alongside(name, [v for v, percent in weights.items() if percent > 0])
        self._slot.set_split(weights)
        return self.traffic(name)

    async def load_alongside(self, name: str, versions: Sequence[str]) -> None:
        """Load each of ``versions`` of model ``name`` that is not loaded yet next to the serving
        ones (the configured load order); raises ``LoadFailed`` when one fails."""
        for version in versions:
            if self._slot.draining((name, version)):
                raise FailedPrecondition(f"version {version} of {name} is being unloaded; wait until it has "
                                         "drained (stylecast models split shows it), then load it again")
            if self._slot.version(name, version) is None:
                package = await asyncio.to_thread(self._registry.find, name, version)
                await self._loader.load(package, load_order(self._config, package), alongside=True)

    def traffic(self, name: str = "") -> list[VersionTraffic]:
        """Every loaded version of the served model with its share of new traffic and open streams."""
        self._served(name)
        return [VersionTraffic(m.package.version, self._slot.percent(m.key), self._slot.open_streams(m.key),
                               self._slot.draining(m.key), m.backend.name, m.format) for m in self._slot.loaded()]

    @property
    def served_name(self) -> str:
        """The served model's name."""
        return self._slot.model.package.name

    def _on_disk(self, name: str, version: str) -> tuple[Path | None, bool]:
        """(the installed folder of ``name:version`` or None, whether an upload of it is in progress);
        file reads: call from a thread."""
        return self._registry.installed(name, version), self._uploads.partial_dir(name, version).is_dir()

    def _find_loadable(self, name: str, version: str) -> ModelPackage:
        """The package to load (file reads: call from a thread); raises ``FailedPrecondition`` while
        that version is still uploading, or as :meth:`ModelRegistry.find` does."""
        if version:
            installed, partial = self._on_disk(name, version)
            if installed is None and partial:
                raise FailedPrecondition(f"model {name}:{version} is still uploading; finish the upload "
                                         "(send its manifest again to resume) before loading it")
        return self._registry.find(name, version)

    def _served(self, name: str) -> str:
        served = self._slot.model.package.name
        if name and name != served:
            raise InvalidArgument(f"model {name!r} is not served here (this server serves {served!r}); a traffic "
                                  "split shares traffic between versions of the served model")
        return served

    def backends(self) -> list[BackendStatus]:
        """Every registered backend: whether its runtime is installed, why it cannot run here
        ("" when it can: the checks ``--backend auto`` makes) and whether it serves."""
        serving = self._slot.model.backend.name
        return [BackendStatus(n, is_installed(n), backend_formats(n), n == serving, unavailable(n))
                for n in backend_names()]
