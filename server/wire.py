"""Conversions between the v1 StyleTransfer protobuf messages and the server's plain data types."""

from __future__ import annotations

from stylecast.server.codecs import ImageInput
from stylecast.server.errors import InvalidArgument
from stylecast.server.session import FrameResult, OutputSpec, StyleSpec
from stylecast.server.style_store import StyleRecord
from stylecast.v1 import stylecast_pb2 as pb

PIXEL_FORMATS = {pb.PIXEL_FORMAT_UNSPECIFIED: "encoded", pb.PIXEL_FORMAT_RGB24: "rgb24",
                 pb.PIXEL_FORMAT_RGBA32: "rgba32", pb.PIXEL_FORMAT_GRAY8: "gray8"}
ENCODINGS = {pb.ENCODING_UNSPECIFIED: "jpeg", pb.ENCODING_JPEG: "jpeg", pb.ENCODING_PNG: "png",
             pb.ENCODING_WEBP: "webp", pb.ENCODING_RAW_RGB24: "raw"}
_ENCODING_FORMATS = {"jpeg": pb.PIXEL_FORMAT_UNSPECIFIED, "png": pb.PIXEL_FORMAT_UNSPECIFIED,
                     "webp": pb.PIXEL_FORMAT_UNSPECIFIED, "raw": pb.PIXEL_FORMAT_RGB24}


def image_input(msg: pb.Image) -> ImageInput:
    try:
        fmt = PIXEL_FORMATS[msg.pixel_format]
    except KeyError:
        raise InvalidArgument(f"unknown pixel_format {msg.pixel_format}") from None
    return ImageInput(msg.data, fmt, msg.width, msg.height)


def style_spec(cfg: pb.StreamConfig) -> StyleSpec:
    if cfg.style_id and cfg.blend:
        raise InvalidArgument("StreamConfig: set style_id or blend, not both")
    weights = ((cfg.style_id, 1.0),) if cfg.style_id else tuple((b.style_id, b.weight) for b in cfg.blend)
    return StyleSpec(weights, cfg.strength if cfg.HasField("strength") else 1.0)


def output_spec(opts: pb.OutputOptions) -> OutputSpec:
    try:
        encoding = ENCODINGS[opts.encoding]
    except KeyError:
        raise InvalidArgument(f"unknown output encoding {opts.encoding}") from None
    return OutputSpec(encoding, opts.quality, opts.width, opts.height)


def stylized_frame(frame_id: int, res: FrameResult) -> pb.StylizedFrame:
    t = res.timings_ms
    return pb.StylizedFrame(
        id=frame_id,
        image=pb.Image(data=res.data, pixel_format=_ENCODING_FORMATS[res.encoding], width=res.width,
                       height=res.height),
        timings=pb.StageTimings(queue_ms=t["queue"], decode_ms=t["decode"], infer_ms=t["infer"],
                                encode_ms=t["encode"], total_ms=t["total"]),
        backend=res.backend, model=res.model, model_version=res.version, batch_size=res.batch_size)


def style_message(record: StyleRecord, thumbnail: bytes = b"") -> pb.Style:
    return pb.Style(id=record.id, name=record.name, created_unix_ms=record.created_ms,
                    thumbnail_jpeg=thumbnail, model_versions=list(record.model_versions))
