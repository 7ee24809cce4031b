"""Plain result and option types the SDK returns and accepts (no protobuf in user code)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from stylecast.client.errors import StylecastError

if TYPE_CHECKING:
    from PIL import Image as PILImage

ENCODINGS = ("jpeg", "png", "webp", "raw")
MODES = ("every_frame", "live")


@dataclass(frozen=True)
class Output:
    """What the server should send back: encoding (jpeg|png|webp|raw), quality 1..100 (0 = default),
    and size (0 = the input's)."""

    encoding: str = "jpeg"
    quality: int = 0
    width: int = 0
    height: int = 0

    def __post_init__(self) -> None:
        enc = {"jpg": "jpeg", "rgb24": "raw"}.get(self.encoding.lower(), self.encoding.lower())
        if enc not in ENCODINGS:
            raise ValueError(f"unknown output encoding {self.encoding!r}; choose one of {', '.join(ENCODINGS)}")
        object.__setattr__(self, "encoding", enc)


@dataclass(frozen=True)
class Limits:
    """What a server accepts: ``max_message_bytes`` per message either way (a request, an answer,
    a whole style upload) and ``max_pixels`` (width × height) per image."""

    max_message_bytes: int
    max_pixels: int


@dataclass(frozen=True)
class Style:
    """A registered style.  ``created`` is True only on the call that first registered it."""

    id: str
    name: str
    created_at: datetime | None
    model_versions: tuple[str, ...] = ()
    thumbnail_jpeg: bytes | None = None
    created: bool = False


@dataclass(frozen=True)
class StyleMatch:
    style: Style
    score: float


@dataclass(frozen=True)
class Timings:
    """Server-side stage times in milliseconds."""

    queue_ms: float
    decode_ms: float
    infer_ms: float
    encode_ms: float
    total_ms: float


@dataclass(frozen=True)
class FrameResult:
    """The answer for one frame: ``status`` is ``ok`` (``data`` holds the image), ``error``
    (``error`` holds the typed exception) or ``dropped`` (LIVE mode skipped it).
    ``latency_ms`` is measured by the client from send to receipt (streams only)."""

    id: int
    status: Literal["ok", "error", "dropped"]
    data: bytes = b""
    raw: bool = False
    width: int = 0
    height: int = 0
    timings: Timings | None = None
    backend: str = ""
    model: str = ""
    model_version: str = ""
    batch_size: int = 0
    error: StylecastError | None = None
    drop_reason: str = ""
    latency_ms: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def format(self) -> str:
        """``raw`` for RGB24 pixels, else the sniffed encoding (jpeg|png|webp)."""
        if self.raw:
            return "raw"
        head = self.data[:12]
        if head.startswith(b"\xff\xd8"):
            return "jpeg"
        if head.startswith(b"\x89PNG"):
            return "png"
        if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            return "webp"
        return "unknown"

    def raise_for_status(self) -> FrameResult:
        """Raise the frame's typed error (a ``StylecastError`` for a dropped frame); return self if ok."""
        if self.error is not None:
            raise self.error
        if self.status == "dropped":
            raise StylecastError(f"frame {self.id} dropped: {self.drop_reason}")
        return self

    def to_array(self) -> np.ndarray:
        """The image as an H×W×3 uint8 RGB array."""
        self.raise_for_status()
        if self.raw:
            return np.frombuffer(self.data, np.uint8).reshape(self.height, self.width, 3)
        return np.asarray(self.to_pil().convert("RGB"))

    def to_pil(self) -> PILImage.Image:
        from PIL import Image

        self.raise_for_status()
        if self.raw:
            return Image.fromarray(self.to_array())
        img = Image.open(io.BytesIO(self.data))
        img.load()
        return img

    def save(self, path: str | Path, quality: int = 95) -> Path:
        """Write the image; bytes are copied as-is when the suffix matches their encoding."""
        path = Path(path)
        suffix = path.suffix.lower().lstrip(".")
        if {"jpg": "jpeg"}.get(suffix, suffix) == self.format:
            path.write_bytes(self.data)
        else:
            self.to_pil().convert("RGB").save(path, quality=quality)
        return path


@dataclass(frozen=True)
class ArtifactInfo:
    """One artifact (format) of a model package and its load state: available, queued,
    verifying, loading, warming, active or failed (``error`` says why)."""

    format: str
    state: str
    bytes: int
    done_bytes: int = 0
    backend: str = ""
    error: str = ""
    load_seconds: float = 0.0


@dataclass(frozen=True)
class UploadInfo:
    """An upload's progress; ``missing`` lists (path, chunk index) pairs the server still needs."""

    name: str
    version: str
    total_chunks: int
    received_chunks: int
    total_bytes: int
    received_bytes: int
    complete: bool
    missing: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class ModelInfo:
    """A model package on the server: state is uploading, available, loading, active or failed."""

    name: str
    version: str
    state: str
    bytes: int
    artifacts: tuple[ArtifactInfo, ...]
    uploaded: bool = False
    swaps: int = 0
    upload: UploadInfo | None = None

    @property
    def active(self) -> ArtifactInfo | None:
        """The artifact serving new frames, if any."""
        return next((a for a in self.artifacts if a.state == "active"), None)


@dataclass(frozen=True)
class VersionTraffic:
    """A loaded version of the served model in a traffic split: its share of new streams and calls
    (percent), the streams open on it, whether it is being unloaded, and the artifact serving it."""

    version: str
    percent: int
    open_streams: int
    draining: bool
    backend: str
    format: str


@dataclass(frozen=True)
class BackendInfo:
    name: str
    installed: bool
    formats: tuple[str, ...]
    serving: bool
    unavailable: str = ""  # why it cannot run on that server; "" when it can
