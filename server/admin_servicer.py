"""The ModelAdmin servicer: upload, load, unload, list and watch model packages.

Thin: protobuf in, registry / upload store / loader calls, protobuf out.  File work
runs in threads, never on the event loop.  The app serves it on loopback only.
"""

from __future__ import annotations

import asyncio

import grpc

from stylecast.backends.base import backend_names, is_installed
from stylecast.server import admin_protocol as proto
from stylecast.server.config import ConfigError, parse_load_order
from stylecast.server.engine import Engine
from stylecast.server.errors import FailedPrecondition, InvalidArgument, NotFound, mapped_errors
from stylecast.server.models import BACKEND_FORMATS, load_order
from stylecast.server.registry import UploadProgress
from stylecast.v1 import model_admin_pb2 as apb
from stylecast.v1 import model_admin_pb2_grpc as apb_grpc


class ModelAdminServicer(apb_grpc.ModelAdminServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.registry = engine.registry
        self.uploads = engine.registry.uploads

    @mapped_errors
    async def UploadModel(self, request_iterator, context) -> None:
        first = await context.read()
        if first is grpc.aio.EOF or first.WhichOneof("msg") != "manifest":
            raise InvalidArgument("the first UploadModel message must carry the package's manifest.json")
        upload = await asyncio.to_thread(self.uploads.begin, first.manifest, self.registry.installed)
        try:
            await context.write(proto.upload_status(*upload.key, UploadProgress.of(upload, with_missing=True)))
            while (msg := await context.read()) is not grpc.aio.EOF:
                if msg.WhichOneof("msg") != "chunk":
                    raise InvalidArgument("after the manifest an upload carries chunks only")
                await asyncio.to_thread(self.uploads.put, upload, msg.chunk.path, msg.chunk.index, msg.chunk.data)
            await asyncio.to_thread(self.uploads.finish, upload)
        finally:
            self.uploads.release(upload.key)
        self.registry.forget(*upload.key)  # a failed earlier load of the same key is history
        await context.write(proto.upload_status(*upload.key, UploadProgress.of(upload)))

    @mapped_errors
    async def LoadModel(self, request: apb.LoadModelRequest, context) -> apb.LoadModelResponse:
        name = request.name or self.engine.model.package.name
        if request.version and self.registry.installed(name, request.version) is None \
                and self.uploads.partial_dir(name, request.version).is_dir():
            raise FailedPrecondition(f"model {name}:{request.version} is still uploading; finish the upload "
                                     "(send its manifest again to resume) before loading it")
        package = await asyncio.to_thread(self.registry.find, name, request.version)
        try:
            requested = parse_load_order(request.load_order)
        except ConfigError as exc:
            raise InvalidArgument(str(exc)) from None
        await self.engine.loader.load(package, load_order(self.engine.config, package, requested))
        return apb.LoadModelResponse(model=proto.model_info(self.registry.status(package)))

    @mapped_errors
    async def UnloadModel(self, request: apb.UnloadModelRequest, context) -> apb.UnloadModelResponse:
        name, version = request.name, request.version
        if not name or not version:
            raise InvalidArgument("UnloadModel needs a model name and version")
        current = self.engine.current
        if current is not None and current.key == (name, version):
            raise FailedPrecondition(f"model {name}:{version} is serving; load another model first")
        installed = self.registry.installed(name, version)
        partial = self.uploads.partial_dir(name, version).is_dir()
        if installed is None and not partial:
            raise NotFound(f"model {name}:{version} is neither installed nor being uploaded")
        unloaded = self.engine.loader.loading(name, version) and await self.engine.loader.stop_background()
        deleted = False
        if request.delete_files:
            if installed is not None and not self.registry.is_uploaded(installed):
                raise FailedPrecondition(f"model {name}:{version} is in the models folder {self.registry.models_root}, "
                                         "which the server never deletes from")
            deleted = await asyncio.to_thread(self.uploads.delete, name, version)
        self.registry.forget(name, version)
        return apb.UnloadModelResponse(unloaded=unloaded, deleted=deleted)

    @mapped_errors
    async def ListModels(self, request: apb.ListModelsRequest, context) -> apb.ListModelsResponse:
        statuses = await asyncio.to_thread(self.registry.statuses, request.name)
        return apb.ListModelsResponse(models=[proto.model_info(s) for s in statuses])

    @mapped_errors
    async def WatchModel(self, request: apb.WatchModelRequest, context) -> None:
        current = self.engine.model
        name = request.name or current.package.name
        version = request.version or self.engine.loader.loading_version(name) or (
            current.package.version if name == current.package.name else "")
        package = await asyncio.to_thread(self.registry.find, name, version)
        async for status in self.registry.watch(package):
            await context.write(proto.model_info(status))

    @mapped_errors
    async def ListBackends(self, request: apb.ListBackendsRequest, context) -> apb.ListBackendsResponse:
        serving = self.engine.model.backend.name
        return apb.ListBackendsResponse(backends=[
            apb.BackendInfo(name=n, installed=is_installed(n), formats=BACKEND_FORMATS.get(n, ()), serving=n == serving)
            for n in backend_names()])
