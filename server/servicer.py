"""The StyleTransfer servicer: protobuf in, engine calls, protobuf out — nothing more."""

from __future__ import annotations

import asyncio

import grpc

from stylecast.server import protocol
from stylecast.server.engine import Engine, ImageInput
from stylecast.server.errors import InvalidArgument, ResourceExhausted, mapped_errors
from stylecast.server.stream import StylizeStream
from stylecast.v1 import stylecast_pb2 as pb
from stylecast.v1 import stylecast_pb2_grpc as pb_grpc

MAX_PAGE_SIZE = 1000


class StyleTransferServicer(pb_grpc.StyleTransferServicer):
    def __init__(self, engine: Engine, shutdown: asyncio.Event) -> None:
        self.engine, self.shutdown = engine, shutdown

    @mapped_errors
    async def Stylize(self, request_iterator, context):
        await StylizeStream(self.engine, context.read, context.write, grpc.aio.EOF, self.shutdown).run()

    @mapped_errors
    async def StylizeImage(self, request: pb.StylizeImageRequest, context) -> pb.StylizeImageResponse:
        cfg = request.config
        protocol.check_model(cfg.model, self.engine.package.name)
        session = await self.engine.session(protocol.style_spec(cfg), protocol.output_spec(cfg.output),
                                            cfg.process_max_side)
        res = await session.process(protocol.image_input(request.image))
        return pb.StylizeImageResponse(result=protocol.stylized_frame(0, res))

    @mapped_errors
    async def RegisterStyle(self, request_iterator, context) -> pb.RegisterStyleResponse:
        limit, name, chunks, size = self.engine.config.max_message_bytes, "", [], 0
        async for upload in request_iterator:
            name = name or upload.name
            size += len(upload.chunk)
            if size > limit:
                raise ResourceExhausted(f"style image exceeds {limit} bytes (max_message_bytes)")
            chunks.append(upload.chunk)
        if not size:
            raise InvalidArgument("RegisterStyle received no image bytes")
        record, created = await self.engine.register_style(ImageInput(b"".join(chunks)), name)
        return pb.RegisterStyleResponse(style=protocol.style_message(record), created=created)

    @mapped_errors
    async def GetStyle(self, request: pb.GetStyleRequest, context) -> pb.Style:
        record = await self.engine.get_style(request.id)
        thumb = await self.engine.thumbnail(request.id) if request.include_thumbnail else b""
        return protocol.style_message(record, thumb)

    @mapped_errors
    async def ListStyles(self, request: pb.ListStylesRequest, context) -> pb.ListStylesResponse:
        size = min(request.page_size or 100, MAX_PAGE_SIZE)
        records, token = await self.engine.library.list(size, request.page_token)
        return pb.ListStylesResponse(styles=[protocol.style_message(r) for r in records], next_page_token=token)

    @mapped_errors
    async def DeleteStyle(self, request: pb.DeleteStyleRequest, context) -> pb.DeleteStyleResponse:
        return pb.DeleteStyleResponse(deleted=await self.engine.delete_style(request.id))

    @mapped_errors
    async def SearchStyles(self, request: pb.SearchStylesRequest, context) -> pb.SearchStylesResponse:
        protocol.check_model(request.model, self.engine.package.name)
        which = request.WhichOneof("query")
        matches = await self.engine.search(
            style_id=request.style_id if which == "style_id" else "",
            image=protocol.image_input(request.image) if which == "image" else None,
            limit=min(request.limit or 10, MAX_PAGE_SIZE))
        return pb.SearchStylesResponse(matches=[pb.StyleMatch(style=protocol.style_message(r), score=s)
                                                for r, s in matches])

    @mapped_errors
    async def GetLimits(self, request: pb.GetLimitsRequest, context) -> pb.Limits:
        config = self.engine.config
        return pb.Limits(max_message_bytes=config.max_message_bytes, max_pixels=config.max_pixels)
