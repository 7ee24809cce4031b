"""Model control: the policy behind ModelAdmin — upload, load, unload, list and watch packages.

Checks what may be loaded or removed (never the serving version, never the models folder),
turns load orders into (backend, format) entries and drives the :class:`Loader`.  File
work runs in threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from stylecast.backends.base import backend_formats, backend_names, is_installed
from stylecast.server.config import ConfigError, ServerConfig, parse_load_order
from stylecast.server.errors import FailedPrecondition, InvalidArgument, NotFound
from stylecast.server.loader import Loader
from stylecast.server.packages import load_order
from stylecast.server.registry import ModelRegistry, ModelStatus, UploadProgress
from stylecast.server.serving import ServingSlot

Chunk = tuple[str, int, bytes]  # (file path in the package, chunk index, data)


@dataclass(frozen=True)
class BackendStatus:
    name: str
    installed: bool
    formats: tuple[str, ...]
    serving: bool


class ModelControl:
    """ModelAdmin's operations over the registry, the serving slot and the loader."""

    def __init__(self, config: ServerConfig, registry: ModelRegistry, slot: ServingSlot, loader: Loader) -> None:
        self._config, self._registry, self._slot, self._loader = config, registry, slot, loader
        self._uploads = registry.uploads

    async def upload(self, manifest: bytes, chunks: AsyncIterator[Chunk]
                     ) -> AsyncIterator[tuple[tuple[str, str], UploadProgress]]:
        """Receive a package: yields ((name, version), progress) once the manifest is accepted
        (listing the chunks still missing) and once every chunk has verified."""
        upload = await asyncio.to_thread(self._uploads.begin, manifest, self._registry.installed)
        try:
            yield upload.key, UploadProgress.of(upload, with_missing=True)
            async for path, index, data in chunks:
                await asyncio.to_thread(self._uploads.put, upload, path, index, data)
            await asyncio.to_thread(self._uploads.finish, upload)
        finally:
            self._uploads.release(upload.key)
        self._registry.forget(*upload.key)  # a failed earlier load of the same key is history
        yield upload.key, UploadProgress.of(upload)

    async def load(self, name: str, version: str, requested_order: Sequence[str] = ()) -> ModelStatus:
        """Serve ``name`` (the served model's name if "") at ``version`` (latest if ""), loading
        ``requested_order`` ("backend:format" entries; the config's order if empty)."""
        name = name or self._slot.model.package.name
        if version and self._registry.installed(name, version) is None \
                and self._uploads.partial_dir(name, version).is_dir():
            raise FailedPrecondition(f"model {name}:{version} is still uploading; finish the upload "
                                     "(send its manifest again to resume) before loading it")
        package = await asyncio.to_thread(self._registry.find, name, version)
        try:
            requested = parse_load_order(requested_order)
        except ConfigError as exc:
            raise InvalidArgument(str(exc)) from None
        await self._loader.load(package, load_order(self._config, package, requested))
        return self._registry.status(package)

    async def unload(self, name: str, version: str, delete_files: bool) -> tuple[bool, bool]:
        """Stop loading a version in the background and forget its state; with ``delete_files``
        also delete an uploaded package.  → (a background load was stopped, files were deleted)."""
        if not name or not version:
            raise InvalidArgument("UnloadModel needs a model name and version")
        current = self._slot.current
        if current is not None and current.key == (name, version):
            raise FailedPrecondition(f"model {name}:{version} is serving; load another model first")
        installed = self._registry.installed(name, version)
        partial = self._uploads.partial_dir(name, version).is_dir()
        if installed is None and not partial:
            raise NotFound(f"model {name}:{version} is neither installed nor being uploaded")
        unloaded = self._loader.loading(name, version) and await self._loader.stop_background()
        deleted = False
        if delete_files:
            if installed is not None and not self._registry.is_uploaded(installed):
                raise FailedPrecondition(f"model {name}:{version} is in the models folder "
                                         f"{self._registry.models_root}, which the server never deletes from")
            deleted = await asyncio.to_thread(self._uploads.delete, name, version)
        self._registry.forget(name, version)
        return unloaded, deleted

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

    def backends(self) -> list[BackendStatus]:
        """Every registered backend, whether its runtime is installed and whether it serves."""
        serving = self._slot.model.backend.name
        return [BackendStatus(n, is_installed(n), backend_formats(n), n == serving) for n in backend_names()]
