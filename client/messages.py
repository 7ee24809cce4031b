"""Request building and response parsing shared by every transport.

Turns user values (paths, bytes, ndarrays, PIL images, style ids or blends)
into ``stylecast.v1`` messages and server answers back into :mod:`types`.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import ImageOps

from stylecast.client.errors import InvalidArgument, ResourceExhausted, error_for
from stylecast.client.types import (MODES, ArtifactInfo, BackendInfo, FrameResult, Limits, ModelInfo, Output,
                                    Style, StyleMatch, Timings, UploadInfo, VersionTraffic)
from stylecast.model.preprocess import grey16_to_uint8, on_white, to_rgb, to_uint8
from stylecast.v1 import model_admin_pb2 as apb
from stylecast.v1 import stylecast_pb2 as pb

CHUNK_BYTES = 1 << 20

# An image: a file path, encoded bytes, an ndarray (see ``pixels``), a PIL image of any mode
# ``to_rgb`` takes, or a ready ``stylecast.v1.Image``.
ImageLike = str | os.PathLike | bytes | bytearray | memoryview | np.ndarray | PILImage.Image | pb.Image
# A style: an id, a Style, or a blend {id or Style: weight}.
StyleSpec = str | Style | Mapping[str | Style, float]

_ENCODING = {"jpeg": pb.ENCODING_JPEG, "png": pb.ENCODING_PNG, "webp": pb.ENCODING_WEBP,
             "raw": pb.ENCODING_RAW_RGB24}
_MODE = {"every_frame": pb.STREAM_MODE_EVERY_FRAME, "live": pb.STREAM_MODE_LIVE}
_RAW_FORMAT = {3: pb.PIXEL_FORMAT_RGB24, 4: pb.PIXEL_FORMAT_RGBA32, 1: pb.PIXEL_FORMAT_GRAY8}
_RAW_PIL_MODES = ("RGB", "RGBA", "L")  # sent as their own pixels; every other mode through to_rgb
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class StreamOptions:
    """Everything a ``StreamConfig`` carries.  Put one into a stream's frame iterable to
    switch style (or any other option) from that point on."""

    style: StyleSpec
    strength: float | None = None
    output: Output | str | None = None
    mode: str = "every_frame"
    process_max_side: int = 0
    model: str = ""
    model_version: str = ""   # pin a loaded version ("" = the server's traffic split assigns one)


def _array_pixels(array: np.ndarray) -> np.ndarray:
    """An ndarray as uint8 H×W, H×W×3 or H×W×4 (the raw formats the server takes).

    uint8 as is; bool as 0/255; uint16 by its top 8 bits (as the server reads a 16-bit PNG);
    floats in [0, 1] rounded like the server's own float → uint8; H×W×2 grey + alpha on white."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (2, 3, 4)):
        raise ValueError(f"image arrays must be H×W, H×W×1, H×W×2, H×W×3 or H×W×4, got shape {array.shape}")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * np.uint8(255)
    elif array.dtype == np.uint16:
        array = grey16_to_uint8(array)
    elif np.issubdtype(array.dtype, np.floating):
        if array.size and not (np.isfinite(array).all() and array.min() >= 0.0 and array.max() <= 1.0):
            raise ValueError(f"float image arrays must hold values in [0, 1], got {array.min():g}..{array.max():g}: "
                             "scale them (e.g. array / 255 for 0..255 values) or convert to uint8")
        array = to_uint8(array)
    elif array.dtype != np.uint8:
        raise ValueError(f"image arrays of {array.dtype} have no fixed range: convert to uint8 (0..255, e.g. "
                         "array.astype(np.uint8)), uint16 (0..65535) or float in [0, 1]")
    if array.ndim == 3 and array.shape[2] == 2:
        array = on_white(np.repeat(array[..., :1], 3, axis=2), array[..., 1])
    return np.ascontiguousarray(array)


def pixels(image: np.ndarray | PILImage.Image) -> np.ndarray:
    """An ndarray or PIL image as uint8 H×W (grey), H×W×3 (RGB) or H×W×4 (RGBA, which the server
    composites on white): the same pixels the server gets from that image saved as a file.

    PIL images are turned upright by their EXIF orientation and converted by
    :func:`stylecast.model.preprocess.to_rgb`, the server's own conversion.  Raises ``ValueError``
    saying what to convert for a dtype, shape, value range or PIL mode with no fixed meaning."""
    if isinstance(image, np.ndarray):
        return _array_pixels(image)
    if image.getexif().get(_EXIF_ORIENTATION, 1) != 1:
        image = ImageOps.exif_transpose(image)
    if image.mode in _RAW_PIL_MODES and "transparency" not in image.info:
        return np.asarray(image)
    return to_rgb(image)


def _server_decodes(data: bytes) -> bool:
    """True for JPEG, PNG and WebP bytes, which travel encoded (the server decodes them)."""
    return data[:3] == b"\xff\xd8\xff" or data[:8] == b"\x89PNG\r\n\x1a\n" or (
        data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def _decode_locally(data: bytes) -> np.ndarray | None:
    """Pixels of an image the server does not decode (GIF, BMP, TIFF…: the first frame), or None
    when PIL does not recognise the bytes either (the server then says what is wrong)."""
    try:
        img = PILImage.open(io.BytesIO(data))
    except (PILImage.UnidentifiedImageError, OSError):
        return None
    with img:
        return pixels(img)


def to_image(image: ImageLike) -> pb.Image:
    """A ``stylecast.v1.Image``: JPEG/PNG/WebP files and bytes travel as they are; arrays, PIL
    images and other image files (GIF, BMP, TIFF…) as raw pixels (see :func:`pixels`)."""
    if isinstance(image, pb.Image):
        return image
    if isinstance(image, (str, os.PathLike)):
        image = Path(image).read_bytes()
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        if _server_decodes(data) or (image := _decode_locally(data)) is None:
            return pb.Image(data=data)
    if isinstance(image, (np.ndarray, PILImage.Image)):
        array = pixels(image)
        channels = 1 if array.ndim == 2 else array.shape[2]
        return pb.Image(data=array.tobytes(), pixel_format=_RAW_FORMAT[channels],
                        width=array.shape[1], height=array.shape[0])
    raise TypeError(f"cannot send {type(image).__name__} as an image; pass a path, bytes, ndarray or PIL image")


def encoded_bytes(source: ImageLike) -> bytes:
    """Encoded image bytes for an upload: JPEG/PNG/WebP as they are, anything else as a PNG of
    :func:`pixels`."""
    if isinstance(source, (str, os.PathLike)):
        source = Path(source).read_bytes()
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if _server_decodes(data) or (source := _decode_locally(data)) is None:
            return data
    if not isinstance(source, (np.ndarray, PILImage.Image)):
        raise TypeError(f"cannot upload {type(source).__name__} as a style; pass a path, bytes, ndarray or PIL image")
    buf = io.BytesIO()
    PILImage.fromarray(pixels(source)).save(buf, format="PNG")
    return buf.getvalue()


# ------------------------------------------------------------------ size checks, before sending

# Bytes an answer adds to its image (id, timings, backend and model names, field tags): an upper bound.
ANSWER_OVERHEAD = 512


def max_raw_pixels(max_message_bytes: int) -> int:
    """The most pixels a raw RGB24 image may have to fit a message of ``max_message_bytes``
    (a frame or an answer; the few bytes around the pixels counted as :data:`ANSWER_OVERHEAD`)."""
    return (max_message_bytes - ANSWER_OVERHEAD) // 3


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def _message_limit(client_bytes: int, server: Limits | None) -> tuple[int, str]:
    """The binding per-message limit and how to raise it."""
    if server is not None and server.max_message_bytes < client_bytes:
        return server.max_message_bytes, "the server's max_message_bytes"
    return client_bytes, "Client(max_message_bytes=...) (and the server's max_message_bytes)"


def check_message(size: int, what: str, fix: str, client_bytes: int, server: Limits | None) -> None:
    """Raise :class:`ResourceExhausted` saying what to do when a ``size``-byte message exceeds
    this client's or the server's per-message limit (gRPC would refuse it after sending)."""
    limit, raise_it = _message_limit(client_bytes, server)
    if size > limit:
        raise ResourceExhausted(f"{what} is {_mib(size)}, over the {_mib(limit)} a message may carry: "
                                f"{fix}, or raise {raise_it}")


def _size(image: pb.Image) -> tuple[int, int] | None:
    """(width, height) of an image message: from its fields, or an encoded image's header."""
    if image.pixel_format != pb.PIXEL_FORMAT_UNSPECIFIED:
        return image.width, image.height
    try:
        with PILImage.open(io.BytesIO(image.data)) as img:
            return img.size
    except (PILImage.UnidentifiedImageError, OSError):
        return None  # the server will say what is wrong with it


def check_image(image: pb.Image, request_bytes: int, output: pb.OutputOptions, what: str, client_bytes: int,
                server: Limits | None) -> None:
    """Check a request carrying ``image`` (``request_bytes`` serialised) and the raw answer it asks
    for against the limits, before anything is sent; raises ``ResourceExhausted`` or
    ``InvalidArgument`` (pixels) with what to do instead."""
    raw = image.pixel_format != pb.PIXEL_FORMAT_UNSPECIFIED
    advice = ("send it encoded (JPEG on the wire: the JPEG/PNG file itself or JPEG bytes; CLI: --wire jpeg) "
              "or scale it down" if raw else "scale it down or encode it with a lower quality")
    check_message(request_bytes, what, advice, client_bytes, server)
    size = _size(image) if raw or output.encoding == pb.ENCODING_RAW_RGB24 else None
    if size is None:
        return
    w, h = size
    if server is not None and raw and w * h > server.max_pixels:
        raise InvalidArgument(f"{what} is {w}x{h} = {w * h / 1e6:.1f} MP; the server accepts at most "
                              f"{server.max_pixels / 1e6:.1f} MP per image (max_pixels): scale it down")
    if output.encoding == pb.ENCODING_RAW_RGB24:
        ow, oh = output.width, output.height
        if not (ow and oh):
            ow, oh = (ow, max(1, round(h * ow / w))) if ow else (max(1, round(w * oh / h)), oh) if oh else (w, h)
        check_message(ow * oh * 3 + ANSWER_OVERHEAD, f"the raw answer to {what} ({ow}x{oh} RGB24)",
                      "ask for an encoded answer (output='jpeg' or 'png') or a smaller output size",
                      client_bytes, server)


def upload_messages(data: bytes, name: str) -> Iterator[pb.StyleUpload]:
    """The RegisterStyle client stream: the name first, the bytes in 1 MiB chunks."""
    view = memoryview(data)
    yield pb.StyleUpload(name=name, chunk=bytes(view[:CHUNK_BYTES]))
    for start in range(CHUNK_BYTES, len(data), CHUNK_BYTES):
        yield pb.StyleUpload(chunk=bytes(view[start:start + CHUNK_BYTES]))


def _style_id(style: str | Style) -> str:
    return style.id if isinstance(style, Style) else str(style)


def to_output(output: Output | str | None) -> pb.OutputOptions:
    out = Output() if output is None else Output(output) if isinstance(output, str) else output
    return pb.OutputOptions(encoding=_ENCODING[out.encoding], quality=out.quality,
                            width=out.width, height=out.height)


def to_config(options: StreamOptions) -> pb.StreamConfig:
    mode = options.mode.lower()
    if mode not in _MODE:
        raise ValueError(f"unknown stream mode {options.mode!r}; choose one of {', '.join(MODES)}")
    config = pb.StreamConfig(output=to_output(options.output), process_max_side=options.process_max_side,
                             mode=_MODE[mode], model=options.model, model_version=options.model_version)
    if isinstance(options.style, Mapping):
        config.blend.extend(pb.StyleWeight(style_id=_style_id(k), weight=float(w))
                            for k, w in options.style.items())
    elif options.style:
        config.style_id = _style_id(options.style)
    else:
        raise ValueError("a style is required: a style id, a Style, or a {style: weight} blend")
    if options.strength is not None:
        config.strength = float(options.strength)
    return config


def search_request(style: str | Style | None, image: ImageLike | None, limit: int, model: str
                   ) -> pb.SearchStylesRequest:
    if (style is None) == (image is None):
        raise ValueError("search by exactly one of style= or image=")
    request = pb.SearchStylesRequest(limit=limit, model=model)
    if style is not None:
        request.style_id = _style_id(style)
    else:
        request.image.CopyFrom(to_image(image))
    return request


def parse_style(msg: pb.Style, created: bool = False) -> Style:
    when = (datetime.fromtimestamp(msg.created_unix_ms / 1000, tz=timezone.utc)
            if msg.created_unix_ms else None)
    return Style(id=msg.id, name=msg.name, created_at=when, model_versions=tuple(msg.model_versions),
                 thumbnail_jpeg=msg.thumbnail_jpeg or None, created=created)


def parse_matches(msg: pb.SearchStylesResponse) -> list[StyleMatch]:
    return [StyleMatch(style=parse_style(m.style), score=m.score) for m in msg.matches]


def parse_frame(msg: pb.StylizedFrame, latency_ms: float | None = None) -> FrameResult:
    t = msg.timings
    return FrameResult(
        id=msg.id, status="ok", data=msg.image.data,
        raw=msg.image.pixel_format == pb.PIXEL_FORMAT_RGB24,
        width=msg.image.width, height=msg.image.height,
        timings=Timings(t.queue_ms, t.decode_ms, t.infer_ms, t.encode_ms, t.total_ms),
        backend=msg.backend, model=msg.model, model_version=msg.model_version,
        batch_size=msg.batch_size, latency_ms=latency_ms)


def parse_response(msg: pb.StylizeResponse, latency_ms: float | None = None) -> FrameResult:
    kind = msg.WhichOneof("msg")
    if kind == "frame":
        return parse_frame(msg.frame, latency_ms)
    if kind == "error":
        return FrameResult(id=msg.error.id, status="error", error=error_for(msg.error.code, msg.error.message),
                           latency_ms=latency_ms)
    if kind == "dropped":
        return FrameResult(id=msg.dropped.id, status="dropped", drop_reason=msg.dropped.reason,
                           latency_ms=latency_ms)
    raise ValueError(f"empty StylizeResponse from the server: {msg!r}")


def response_id(msg: pb.StylizeResponse) -> int:
    kind = msg.WhichOneof("msg")
    return getattr(msg, kind).id if kind else -1


# ------------------------------------------------------------------ model admin

_ARTIFACT_STATES = {v: k.removeprefix("ARTIFACT_STATE_").lower() for k, v in apb.ArtifactState.items()}
_MODEL_STATES = {v: k.removeprefix("MODEL_STATE_").lower() for k, v in apb.ModelState.items()}


def parse_upload(msg: apb.UploadStatus) -> UploadInfo:
    return UploadInfo(msg.name, msg.version, msg.total_chunks, msg.received_chunks, msg.total_bytes,
                      msg.received_bytes, msg.complete, tuple((m.path, m.index) for m in msg.missing),
                      msg.already_installed)


def parse_model(msg: apb.ModelInfo) -> ModelInfo:
    arts = tuple(ArtifactInfo(a.format, _ARTIFACT_STATES[a.state], a.bytes, a.done_bytes, a.backend, a.error,
                              a.load_seconds) for a in msg.artifacts)
    return ModelInfo(msg.name, msg.version, _MODEL_STATES[msg.state], msg.bytes, arts, msg.uploaded, msg.swaps,
                     parse_upload(msg.upload) if msg.HasField("upload") else None)


def parse_backend(msg: apb.BackendInfo) -> BackendInfo:
    return BackendInfo(msg.name, msg.installed, tuple(msg.formats), msg.serving, msg.unavailable)


def parse_traffic(msg: apb.TrafficSplit) -> list[VersionTraffic]:
    return [VersionTraffic(v.version, v.percent, v.open_streams, v.draining, v.backend, v.format)
            for v in msg.versions]


def read_chunk(package_dir: Path, path: str, index: int) -> bytes:
    """Chunk ``index`` (1 MiB) of a package file, for an upload."""
    with open(package_dir / path, "rb") as f:
        f.seek(index * CHUNK_BYTES)
        return f.read(CHUNK_BYTES)
