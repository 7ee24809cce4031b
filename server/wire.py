"""Conversions between the v1 StyleTransfer protobuf messages and the server's plain data types."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import DecodeError

from stylecast.server.codecs import ImageInput
from stylecast.server.errors import InvalidArgument
from stylecast.server.session import FrameResult, OutputSpec, StyleSpec
from stylecast.server.style_store import MAX_NAME_CHARS, StyleRecord
from stylecast.v1 import stylecast_pb2 as pb

PIXEL_FORMATS = {pb.PIXEL_FORMAT_UNSPECIFIED: "encoded", pb.PIXEL_FORMAT_RGB24: "rgb24",
                 pb.PIXEL_FORMAT_RGBA32: "rgba32", pb.PIXEL_FORMAT_GRAY8: "gray8"}
ENCODINGS = {pb.ENCODING_UNSPECIFIED: "jpeg", pb.ENCODING_JPEG: "jpeg", pb.ENCODING_PNG: "png",
             pb.ENCODING_WEBP: "webp", pb.ENCODING_RAW_RGB24: "raw"}
_ENCODING_FORMATS = {"jpeg": pb.PIXEL_FORMAT_UNSPECIFIED, "png": pb.PIXEL_FORMAT_UNSPECIFIED,
                     "webp": pb.PIXEL_FORMAT_UNSPECIFIED, "raw": pb.PIXEL_FORMAT_RGB24}


def image_input(msg: pb.Image, data: bytes | memoryview | None = None) -> ImageInput:
    """``msg`` as an :class:`ImageInput`; ``data`` (when given) stands for ``msg.data``.
    Raises :class:`InvalidArgument` for an unknown pixel format."""
    try:
        fmt = PIXEL_FORMATS[msg.pixel_format]
    except KeyError:
        raise InvalidArgument(f"unknown pixel_format {msg.pixel_format}") from None
    return ImageInput(msg.data if data is None else data, fmt, msg.width, msg.height)


@dataclass(frozen=True, eq=False)
class ReceivedFrame:
    """A ``StylizeRequest.frame`` as read off the wire (see :func:`parse_stylize_request`):
    ``image`` without its pixels, ``data`` the pixels (usually a view into the received
    message: not copied), ``nbytes`` the whole request's size on the wire."""

    id: int
    image: pb.Image
    data: bytes | memoryview
    nbytes: int

    def image_input(self) -> ImageInput:
        """Raises :class:`InvalidArgument` for an unknown pixel format."""
        return image_input(self.image, self.data)


@dataclass(frozen=True)
class MalformedRequest:
    """A ``Stylize`` message protobuf cannot parse as a ``StylizeRequest``; ``reason`` says why."""

    reason: str


_LEN = 2  # wire type of a length-delimited field (bytes, string, embedded message)
_REQUEST_FRAME = pb.StylizeRequest.DESCRIPTOR.fields_by_name["frame"].number
_FRAME_IMAGE = pb.Frame.DESCRIPTOR.fields_by_name["image"].number
_IMAGE_DATA = pb.Image.DESCRIPTOR.fields_by_name["data"].number


def _read_varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """(value, position after it); ValueError when truncated or over 10 bytes."""
    value = shift = 0
    while pos < end and shift < 70:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise ValueError("bad varint")


def _fields(buf: bytes, start: int, end: int):
    """(number, wire type, start of its tag, start of its value, end) of each field of the
    message in ``buf[start:end]``; ValueError for groups or anything malformed."""
    pos = start
    while pos < end:
        tag_at = pos
        key, pos = _read_varint(buf, pos, end)
        number, kind = key >> 3, key & 7
        if kind == 0:
            _, value_end = _read_varint(buf, pos, end)
        elif kind == 1:
            value_end = pos + 8
        elif kind == 5:
            value_end = pos + 4
        elif kind == _LEN:
            size, pos = _read_varint(buf, pos, end)
            value_end = pos + size
        else:
            raise ValueError("group or unknown wire type")
        if value_end > end or number == 0:
            raise ValueError("field past the end of its message")
        yield number, kind, tag_at, pos, value_end
        pos = value_end


def _only(buf: bytes, start: int, end: int, number: int) -> tuple[int, int, int] | None:
    """(tag start, value start, end) of the one length-delimited field ``number`` of the message
    in ``buf[start:end]``; None when it is absent, repeated or not length-delimited."""
    found = None
    for n, kind, tag_at, value_at, value_end in _fields(buf, start, end):
        if n == number:
            if found is not None or kind != _LEN:
                return None
            found = (tag_at, value_at, value_end)
    return found


def _frame_pixels(data: bytes) -> tuple[tuple[int, int, int], tuple[int, int, int], tuple[int, int, int]] | None:
    """Where a request holding only a frame, with one image holding one ``data`` field, keeps
    its frame, image and pixels; None for any other request (then protobuf parses it)."""
    fields = list(_fields(data, 0, len(data)))
    if len(fields) != 1 or fields[0][0] != _REQUEST_FRAME or fields[0][1] != _LEN:
        return None
    frame = fields[0][2:]
    if (image := _only(data, frame[1], frame[2], _FRAME_IMAGE)) is None:
        return None
    if (pixels := _only(data, image[1], image[2], _IMAGE_DATA)) is None:
        return None
    return frame, image, pixels


def parse_stylize_request(data: bytes) -> pb.StylizeRequest | ReceivedFrame | MalformedRequest:
    """The ``Stylize`` request deserializer: a frame becomes a :class:`ReceivedFrame` whose
    pixels are a view into ``data`` (protobuf would copy them twice: parsing, then reading
    ``image.data``; about 0.1 ms per 384² raw frame on the event loop), anything else a
    ``StylizeRequest``.  The frame's and image's other fields are parsed by protobuf.  A message
    protobuf cannot parse becomes a :class:`MalformedRequest` (the stream refuses it with
    INVALID_ARGUMENT; a deserializer that raised would end the call as an internal error)."""
    try:
        where = _frame_pixels(data)
    except ValueError:
        where = None
    if where is None:  # not the usual layout (or malformed: protobuf says how)
        try:
            request = pb.StylizeRequest.FromString(data)
        except DecodeError as exc:
            return MalformedRequest(str(exc) or "not a protobuf message")
        if request.WhichOneof("msg") != "frame":
            return request
        frame = request.frame
        return ReceivedFrame(frame.id, frame.image, frame.image.data, len(data))
    (_, frame_at, frame_end), (image_tag, image_at, image_end), (pixels_tag, pixels_at, pixels_end) = where
    view = memoryview(data)
    frame = pb.Frame.FromString(b"".join((view[frame_at:image_tag], view[image_end:frame_end])))
    image = pb.Image.FromString(b"".join((view[image_at:pixels_tag], view[pixels_end:image_end])))
    return ReceivedFrame(frame.id, image, view[pixels_at:pixels_end], len(data))


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


def stylized_frame(frame_id: int, res: FrameResult, *, with_data: bool = True) -> pb.StylizedFrame:
    t = res.timings_ms
    return pb.StylizedFrame(
        id=frame_id,
        image=pb.Image(data=bytes(res.data) if with_data else b"", pixel_format=_ENCODING_FORMATS[res.encoding],
                       width=res.width, height=res.height),
        timings=pb.StageTimings(queue_ms=t["queue"], decode_ms=t["decode"], infer_ms=t["infer"],
                                encode_ms=t["encode"], total_ms=t["total"]),
        backend=res.backend, model=res.model, model_version=res.version, batch_size=res.batch_size)


_FRAME = pb.StylizeResponse.DESCRIPTOR.fields_by_name["frame"].number
_IMAGE = pb.StylizedFrame.DESCRIPTOR.fields_by_name["image"].number
_DATA = pb.Image.DESCRIPTOR.fields_by_name["data"].number


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_TAGS: dict[int, bytes] = {}
# StylizedFrame heads without id and timings, by what stays the same across a stream's frames
_HEADS: dict[tuple, pb.StylizedFrame] = {}
MAX_HEADS = 64


def _frame_head(frame_id: int, res: FrameResult) -> bytes:
    """``stylized_frame(frame_id, res, with_data=False)`` serialized: a copy of a cached message
    with the frame's id and timings set (a quarter of the time of building it field by field)."""
    key = (res.encoding, res.width, res.height, res.backend, res.model, res.version, res.batch_size)
    if (template := _HEADS.get(key)) is None:
        if len(_HEADS) >= MAX_HEADS:
            _HEADS.clear()
        template = _HEADS[key] = stylized_frame(0, res, with_data=False)  # id and timings set below
    msg = pb.StylizedFrame()
    msg.CopyFrom(template)
    msg.id = frame_id
    t, ms = msg.timings, res.timings_ms
    t.queue_ms, t.decode_ms, t.infer_ms, t.encode_ms, t.total_ms = (
        ms["queue"], ms["decode"], ms["infer"], ms["encode"], ms["total"])
    return msg.SerializeToString()


def _field_prefix(number: int, size: int) -> bytes:
    """Tag and length of a length-delimited field (wire type 2) holding ``size`` bytes."""
    if (tag := _TAGS.get(number)) is None:
        tag = _TAGS[number] = _varint(number << 3 | 2)
    return tag + _varint(size)


def stylized_frame_response(frame_id: int, res: FrameResult) -> bytes:
    """``StylizeResponse(frame=stylized_frame(frame_id, res))`` serialized, with the image bytes
    copied once, straight from ``res.data`` (bytes or a view of the output array).

    Protobuf serializes every field but ``image.data``; the pixels follow as a second
    ``image`` field holding only ``data``, which parsers merge into the first (the encoding
    spec's rule for an embedded message that appears twice).  Building the message instead
    copies the pixels four times (into ``Image``, ``StylizedFrame``, ``StylizeResponse``, the
    serialized bytes): about 0.1 ms per 384² raw frame on the event loop.  Its size on the
    wire is ``len()`` of the result."""
    head = _frame_head(frame_id, res)
    data = memoryview(res.data).cast("B")
    data_prefix = _field_prefix(_DATA, data.nbytes)
    image_prefix = _field_prefix(_IMAGE, len(data_prefix) + data.nbytes)
    frame_size = len(head) + len(image_prefix) + len(data_prefix) + data.nbytes
    return b"".join((_field_prefix(_FRAME, frame_size), head, image_prefix, data_prefix, data))


def serialize_stylize_response(response: pb.StylizeResponse | bytes) -> bytes:
    """The ``Stylize`` response serializer: messages are serialized, bytes from
    :func:`stylized_frame_response` pass through as they are."""
    return response if isinstance(response, bytes) else response.SerializeToString()


def stylize_response_size(response: pb.StylizeResponse | bytes) -> int:
    """Bytes ``response`` takes on the wire (a message or :func:`stylized_frame_response` bytes)."""
    return len(response) if isinstance(response, bytes) else response.ByteSize()


def style_message(record: StyleRecord, thumbnail: bytes = b"") -> pb.Style:
    return pb.Style(id=record.id, name=record.name[:MAX_NAME_CHARS], created_unix_ms=record.created_ms,
                    thumbnail_jpeg=thumbnail, model_versions=list(record.model_versions))
