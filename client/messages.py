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

from stylecast.client.errors import error_for
from stylecast.client.types import (MODES, ArtifactInfo, BackendInfo, FrameResult, ModelInfo, Output, Style,
                                    StyleMatch, Timings, UploadInfo)
from stylecast.v1 import model_admin_pb2 as apb
from stylecast.v1 import stylecast_pb2 as pb

CHUNK_BYTES = 1 << 20

# An image: a file path, encoded bytes (JPEG/PNG/WebP), an RGB/RGBA/grey uint8 array,
# a PIL image, or a ready ``stylecast.v1.Image``.
ImageLike = str | os.PathLike | bytes | bytearray | memoryview | np.ndarray | PILImage.Image | pb.Image
# A style: an id, a Style, or a blend {id or Style: weight}.
StyleSpec = str | Style | Mapping[str | Style, float]

_ENCODING = {"jpeg": pb.ENCODING_JPEG, "png": pb.ENCODING_PNG, "webp": pb.ENCODING_WEBP,
             "raw": pb.ENCODING_RAW_RGB24}
_MODE = {"every_frame": pb.STREAM_MODE_EVERY_FRAME, "live": pb.STREAM_MODE_LIVE}
_RAW_FORMAT = {3: pb.PIXEL_FORMAT_RGB24, 4: pb.PIXEL_FORMAT_RGBA32, 1: pb.PIXEL_FORMAT_GRAY8}
_PIL_MODE = {"RGB": 3, "RGBA": 4, "L": 1}


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


def _pixels(array: np.ndarray) -> np.ndarray:
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"image arrays must be uint8 (or float in [0, 1]), got {array.dtype}")
        array = (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ValueError(f"image arrays must be H×W, H×W×3 or H×W×4, got shape {array.shape}")
    return np.ascontiguousarray(array)


def to_image(image: ImageLike) -> pb.Image:
    """A ``stylecast.v1.Image``: arrays and PIL images travel as raw pixels, files and bytes as-is."""
    if isinstance(image, pb.Image):
        return image
    if isinstance(image, (bytes, bytearray, memoryview)):
        return pb.Image(data=bytes(image))
    if isinstance(image, (str, os.PathLike)):
        return pb.Image(data=Path(image).read_bytes())
    if isinstance(image, np.ndarray):
        array = _pixels(image)
        channels = 1 if array.ndim == 2 else array.shape[2]
        return pb.Image(data=array.tobytes(), pixel_format=_RAW_FORMAT[channels],
                        width=array.shape[1], height=array.shape[0])
    if isinstance(image, PILImage.Image):
        if image.mode not in _PIL_MODE:
            image = image.convert("RGB")
        return to_image(np.asarray(image))
    raise TypeError(f"cannot send {type(image).__name__} as an image; pass a path, bytes, ndarray or PIL image")


def encoded_bytes(source: ImageLike) -> bytes:
    """Encoded image bytes for an upload (arrays and PIL images are encoded as PNG)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if isinstance(source, (str, os.PathLike)):
        return Path(source).read_bytes()
    if isinstance(source, np.ndarray):
        source = PILImage.fromarray(_pixels(source))
    if not isinstance(source, PILImage.Image):
        raise TypeError(f"cannot upload {type(source).__name__} as a style; pass a path, bytes, ndarray or PIL image")
    buf = io.BytesIO()
    source.save(buf, format="PNG")
    return buf.getvalue()


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
                             mode=_MODE[mode], model=options.model)
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
                      msg.received_bytes, msg.complete, tuple((m.path, m.index) for m in msg.missing))


def parse_model(msg: apb.ModelInfo) -> ModelInfo:
    arts = tuple(ArtifactInfo(a.format, _ARTIFACT_STATES[a.state], a.bytes, a.done_bytes, a.backend, a.error,
                              a.load_seconds) for a in msg.artifacts)
    return ModelInfo(msg.name, msg.version, _MODEL_STATES[msg.state], msg.bytes, arts, msg.uploaded, msg.swaps,
                     parse_upload(msg.upload) if msg.HasField("upload") else None)


def parse_backend(msg: apb.BackendInfo) -> BackendInfo:
    return BackendInfo(msg.name, msg.installed, tuple(msg.formats), msg.serving)


def read_chunk(package_dir: Path, path: str, index: int) -> bytes:
    """Chunk ``index`` (1 MiB) of a package file, for an upload."""
    with open(package_dir / path, "rb") as f:
        f.seek(index * CHUNK_BYTES)
        return f.read(CHUNK_BYTES)
