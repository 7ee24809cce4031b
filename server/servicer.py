"""The StyleTransfer servicer: protobuf in, session / style calls, protobuf out — nothing more.

Errors are mapped to statuses by the server's ErrorInterceptor."""

from __future__ import annotations

import asyncio

import grpc

from stylecast.server import wire
from stylecast.server.codecs import ImageInput
from stylecast.server.errors import InvalidArgument, ResourceExhausted
from stylecast.server.metrics import Metrics
from stylecast.server.session import Sessions
from stylecast.server.stream import FrameMemory, StylizeStream
from stylecast.server.style_vectors import StyleVectors
from stylecast.v1 import stylecast_pb2 as pb
from stylecast.v1 import stylecast_pb2_grpc as pb_grpc

MAX_PAGE_SIZE = 1000


class StyleTransferServicer(pb_grpc.StyleTransferServicer):
    def __init__(self, sessions: Sessions, styles: StyleVectors, metrics: Metrics, limits: pb.Limits,
                 shutdown: asyncio.Event, memory: FrameMemory) -> None:
        """``limits``: what GetLimits answers; ``max_message_bytes`` also bounds a style upload.
        ``memory``: the server's one budget of frame bytes, shared by every stream."""
        self.sessions, self.styles, self.metrics = sessions, styles, metrics
        self.limits, self.shutdown, self.memory = limits, shutdown, memory

    async def Stylize(self, request_iterator, context):
        await StylizeStream(self.sessions, self.metrics, context.read, context.write, grpc.aio.EOF,
                            self.shutdown, self.memory).run()

    async def StylizeImage(self, request: pb.StylizeImageRequest, context) -> pb.StylizeImageResponse:
        cfg = request.config
        assignment = self.sessions.assign(cfg.model, cfg.model_version)
        try:
            session = await self.sessions.open(wire.style_spec(cfg), wire.output_spec(cfg.output),
                                               cfg.process_max_side, cfg.model, assignment)
            res = await session.process(wire.image_input(request.image))
        finally:
            assignment.release()
        return pb.StylizeImageResponse(result=wire.stylized_frame(0, res))

    async def RegisterStyle(self, request_iterator, context) -> pb.RegisterStyleResponse:
        limit, name, chunks, size = self.limits.max_message_bytes, "", [], 0
        async for upload in request_iterator:
            name = name or upload.name
            size += len(upload.chunk)
            if size > limit:
                raise ResourceExhausted(f"style image exceeds {limit} bytes (max_message_bytes)")
            chunks.append(upload.chunk)
        if not size:
            raise InvalidArgument("RegisterStyle received no image bytes")
        record, created = await self.styles.register(ImageInput(b"".join(chunks)), name)
        return pb.RegisterStyleResponse(style=wire.style_message(record), created=created)

    async def GetStyle(self, request: pb.GetStyleRequest, context) -> pb.Style:
        record = await self.styles.get(request.id)
        thumb = await self.styles.thumbnail(request.id) if request.include_thumbnail else b""
        return wire.style_message(record, thumb)

    async def ListStyles(self, request: pb.ListStylesRequest, context) -> pb.ListStylesResponse:
        size = min(request.page_size or 100, MAX_PAGE_SIZE)
        records, token = await self.styles.list(size, request.page_token)
        return pb.ListStylesResponse(styles=[wire.style_message(r) for r in records], next_page_token=token)

    async def DeleteStyle(self, request: pb.DeleteStyleRequest, context) -> pb.DeleteStyleResponse:
        return pb.DeleteStyleResponse(deleted=await self.styles.delete(request.id))

    async def SearchStyles(self, request: pb.SearchStylesRequest, context) -> pb.SearchStylesResponse:
        which = request.WhichOneof("query")
        matches = await self.styles.search(
            style_id=request.style_id if which == "style_id" else "",
            image=wire.image_input(request.image) if which == "image" else None,
            limit=min(request.limit or 10, MAX_PAGE_SIZE), model_name=request.model)
        return pb.SearchStylesResponse(matches=[pb.StyleMatch(style=wire.style_message(r), score=s)
                                                for r, s in matches])

    async def GetLimits(self, request: pb.GetLimitsRequest, context) -> pb.Limits:
        return self.limits


class _Handlers:
    """Stands in for the server while the generated code registers: collects the handlers."""

    def __init__(self) -> None:
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, _handlers) -> None:
        pass

    def add_registered_method_handlers(self, _service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        self.handlers.update(handlers)


def add_to_server(servicer: StyleTransferServicer, server: grpc.aio.Server) -> None:
    """Register the servicer as the generated ``add_StyleTransferServicer_to_server`` does, with
    one change: ``Stylize`` reads frames whose pixels stay in the received message
    (:func:`wire.parse_stylize_request`) and its answers may be pre-serialized bytes (the
    stylized frames, whose pixels are then copied once; see :func:`wire.stylized_frame_response`)."""
    collected = _Handlers()
    pb_grpc.add_StyleTransferServicer_to_server(servicer, collected)
    handlers = collected.handlers
    stylize = handlers["Stylize"]
    handlers["Stylize"] = grpc.stream_stream_rpc_method_handler(
        stylize.stream_stream, request_deserializer=wire.parse_stylize_request,
        response_serializer=wire.serialize_stylize_response)
    service = pb.DESCRIPTOR.services_by_name["StyleTransfer"].full_name
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    server.add_registered_method_handlers(service, handlers)
