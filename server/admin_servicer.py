"""The ModelAdmin servicer: protobuf in, :class:`ModelControl` calls, protobuf out — nothing more.

The app serves it to the ``admin`` role (without authentication: on loopback only); errors are
mapped by the server's ErrorInterceptor.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

import grpc

from stylecast.server import admin_wire
from stylecast.server.errors import InvalidArgument
from stylecast.server.model_control import Chunk, ModelControl
from stylecast.v1 import model_admin_pb2 as apb
from stylecast.v1 import model_admin_pb2_grpc as apb_grpc


async def _chunks(context: grpc.aio.ServicerContext) -> AsyncIterator[Chunk]:
    while (msg := await context.read()) is not grpc.aio.EOF:
        if msg.WhichOneof("msg") != "chunk":
            raise InvalidArgument("after the manifest an upload carries chunks only")
        yield msg.chunk.path, msg.chunk.index, msg.chunk.data


class ModelAdminServicer(apb_grpc.ModelAdminServicer):
    def __init__(self, control: ModelControl) -> None:
        self.control = control

    async def UploadModel(self, request_iterator, context) -> None:
        first = await context.read()
        if first is grpc.aio.EOF or first.WhichOneof("msg") != "manifest":
            raise InvalidArgument("the first UploadModel message must carry the package's manifest.json")
        async with aclosing(self.control.upload(first.manifest, _chunks(context))) as progress:
            async for (name, version), status in progress:
                await context.write(admin_wire.upload_status(name, version, status))

    async def LoadModel(self, request: apb.LoadModelRequest, context) -> apb.LoadModelResponse:
        status = await self.control.load(request.name, request.version, request.load_order)
        return apb.LoadModelResponse(model=admin_wire.model_info(status))

    async def UnloadModel(self, request: apb.UnloadModelRequest, context) -> apb.UnloadModelResponse:
        unloaded, deleted, draining = await self.control.unload(request.name, request.version, request.delete_files)
        return apb.UnloadModelResponse(unloaded=unloaded, deleted=deleted, draining_streams=draining)

    async def ListModels(self, request: apb.ListModelsRequest, context) -> apb.ListModelsResponse:
        return apb.ListModelsResponse(models=[admin_wire.model_info(s) for s in await self.control.statuses(request.name)])

    async def WatchModel(self, request: apb.WatchModelRequest, context) -> None:
        async with aclosing(self.control.watch(request.name, request.version)) as statuses:
            async for status in statuses:
                await context.write(admin_wire.model_info(status))

    async def ListBackends(self, request: apb.ListBackendsRequest, context) -> apb.ListBackendsResponse:
        return apb.ListBackendsResponse(backends=[
            apb.BackendInfo(name=b.name, installed=b.installed, formats=b.formats, serving=b.serving,
                            unavailable=b.unavailable)
            for b in self.control.backends()])

    async def SetTrafficSplit(self, request: apb.SetTrafficSplitRequest, context) -> apb.TrafficSplit:
        versions = await self.control.set_split(request.model, dict(request.weights))
        return admin_wire.traffic_split(self.control.served_name, versions)

    async def GetTrafficSplit(self, request: apb.GetTrafficSplitRequest, context) -> apb.TrafficSplit:
        return admin_wire.traffic_split(self.control.served_name, self.control.traffic(request.model))
