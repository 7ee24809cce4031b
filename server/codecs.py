"""Image decoding and encoding for frames: raw pixels or JPEG/PNG/WebP → RGB uint8 and back,
and the codec threads they run on.

Every decoded image is H×W×3 uint8 RGB.  Encoded images are checked against the
pixel limit from their header, before any pixel is decoded (decompression bombs).
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from PIL import Image, ImageOps

from stylecast.model.preprocess import on_white, to_rgb
from stylecast.server.errors import InvalidArgument, ResourceExhausted, answer_too_large

RAW_CHANNELS = {"rgb24": 3, "rgba32": 4, "gray8": 1}
ENCODED_FORMATS = ("JPEG", "PNG", "WEBP")
DEFAULT_QUALITY = 90
# the longest side each encoder can write (libwebp: 16383; libjpeg: 65500); raw and PNG: no own limit
MAX_ENCODER_SIDE = {"webp": 16383, "jpeg": 65500}
T = TypeVar("T")
ANSWER_OVERHEAD = 512    # protobuf framing, timings and names around an answer's pixels (as the SDK counts)


def check_output(width: int, height: int, encoding: str, *, max_pixels: int, max_message_bytes: int) -> None:
    """Refuse an output size before any work: encoder side limits and ``max_pixels`` raise
    :class:`InvalidArgument`, a raw answer (3·W·H bytes) that cannot fit ``max_message_bytes``
    :class:`ResourceExhausted`; each message says what to ask for instead.  An encoded answer's
    size is known once encoded (the stream and the AnswerSizeInterceptor check it then)."""
    side = MAX_ENCODER_SIDE.get(encoding)
    if side is not None and max(width, height) > side:
        raise InvalidArgument(f"output {width}x{height}: {encoding} encodes at most {side} px a side; ask for a "
                              f"smaller OutputOptions width/height or use png or raw")
    if width * height > max_pixels:
        raise InvalidArgument(f"output {width}x{height} = {width * height / 1e6:.1f} MP; the server answers at most "
                              f"{max_pixels / 1e6:.1f} MP (max_pixels): ask for a smaller OutputOptions width/height")
    if encoding == "raw" and (size := 3 * width * height + ANSWER_OVERHEAD) > max_message_bytes:
        raise ResourceExhausted(f"{width}x{height} raw: " + answer_too_large(size, max_message_bytes))


@dataclass(frozen=True)
class ImageInput:
    """An image as a client sent it: encoded bytes, or raw pixels with their size."""

    data: bytes | memoryview        # a view: of the received message (see wire.ReceivedFrame)
    pixel_format: str = "encoded"   # encoded | rgb24 | rgba32 | gray8
    width: int = 0                  # raw formats only
    height: int = 0


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise InvalidArgument(f"image has zero size ({width}x{height})")
    if width * height > max_pixels:
        raise InvalidArgument(
            f"image is {width}x{height} = {width * height / 1e6:.1f} MP; the server accepts at most "
            f"{max_pixels / 1e6:.1f} MP per image (max_pixels): scale it down before sending")


def _decode_raw(data: bytes, pixel_format: str, width: int, height: int, max_pixels: int) -> np.ndarray:
    _check_pixels(width, height, max_pixels)
    channels = RAW_CHANNELS[pixel_format]
    expected = width * height * channels
    if len(data) != expected:
        raise InvalidArgument(f"{pixel_format} image {width}x{height} needs {expected} bytes, got {len(data)}")
    arr = np.frombuffer(data, np.uint8).reshape(height, width, channels)
    if channels == 1:
        return np.repeat(arr, 3, axis=2)
    if channels == 4:
        return on_white(arr[..., :3], arr[..., 3])
    return arr


def _decode_encoded(data: bytes, max_pixels: int, draft_side: int | None) -> tuple[np.ndarray, tuple[int, int]]:
    if not data:
        raise InvalidArgument("image is empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(data), formats=ENCODED_FORMATS) as img:
            _check_pixels(*img.size, max_pixels)   # header only: nothing decoded yet
            transposed = ImageOps.exif_transpose(img) if img.getexif().get(0x0112, 1) != 1 else None
            size = (transposed or img).size
            if transposed is None and draft_side and img.format == "JPEG":
                scale = draft_side / max(img.size)
                if scale < 1:  # let libjpeg decode at a reduced size (DCT scaling)
                    img.draft("RGB", (int(img.size[0] * scale) + 1, int(img.size[1] * scale) + 1))
            return to_rgb(transposed or img), size
    except InvalidArgument:
        raise
    except Image.DecompressionBombError as exc:
        raise InvalidArgument(f"image rejected as a decompression bomb ({exc}); the server accepts "
                              f"at most {max_pixels / 1e6:.1f} MP per image (max_pixels)") from None
    except Image.UnidentifiedImageError:
        raise InvalidArgument("image bytes are not a JPEG, PNG or WebP image (or set pixel_format "
                              "for raw pixels)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidArgument(f"corrupt image: {exc}") from None


def decode(data: bytes, pixel_format: str = "encoded", width: int = 0, height: int = 0, *,
           max_pixels: int, draft_side: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode to H×W×3 uint8 RGB; return it and the image's full (width, height).

    ``draft_side`` lets JPEG decoding stop at a reduced resolution no smaller than
    that longer side (the array may then be smaller than the returned size).
    """
    if pixel_format == "encoded":
        return _decode_encoded(data, max_pixels, draft_side)
    if pixel_format not in RAW_CHANNELS:
        raise InvalidArgument(f"unknown pixel format {pixel_format!r}")
    return _decode_raw(data, pixel_format, width, height, max_pixels), (width, height)


def resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of H×W×3 uint8 to ``size`` = (width, height); no copy when equal."""
    if (img.shape[1], img.shape[0]) == size:
        return img
    return np.asarray(Image.fromarray(img).resize(size, Image.BILINEAR))


def fit_within(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """Scale (width, height) so the longer side is at most ``max_side``, keeping aspect."""
    w, h = size
    scale = max_side / max(w, h)
    if scale >= 1:
        return w, h
    return max(1, round(w * scale)), max(1, round(h * scale))


def output_size(source: tuple[int, int], width: int, height: int) -> tuple[int, int]:
    """Requested output size; a zero side follows the source aspect, both zero = source size."""
    sw, sh = source
    if width and height:
        return width, height
    if width:
        return width, max(1, round(sh * width / sw))
    if height:
        return max(1, round(sw * height / sh)), height
    return sw, sh


def encode(img: np.ndarray, encoding: str = "jpeg", quality: int = 0) -> bytes:
    """Encode H×W×3 uint8 RGB as ``jpeg`` | ``png`` | ``webp`` | ``raw`` (RGB24 bytes)."""
    if encoding == "raw":
        return np.ascontiguousarray(img).tobytes()
    buf = io.BytesIO()
    q = quality or DEFAULT_QUALITY
    pil = Image.fromarray(img)
    if encoding == "jpeg":
        pil.save(buf, "JPEG", quality=q)
    elif encoding == "png":
        pil.save(buf, "PNG", compress_level=1)
    elif encoding == "webp":
        pil.save(buf, "WEBP", quality=q, method=2)
    else:
        raise InvalidArgument(f"unknown output encoding {encoding!r}")
    return buf.getvalue()


class CodecPool:
    """The codec threads: decoding, scaling and encoding run here, never on the event loop."""

    def __init__(self, threads: int) -> None:
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="stylecast-codec")

    async def run(self, fn: Callable[..., T], *args) -> T:
        """``fn(*args)`` on a codec thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
