"""The one preprocessing path shared by training, evaluation and serving."""

from __future__ import annotations

import numpy as np
from PIL import Image

STYLE_SIZE = 256


def center_crop_square(img: Image.Image) -> Image.Image:
    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return img.crop((left, top, left + s, top + s))


def style_image(img: Image.Image, size: int = STYLE_SIZE) -> np.ndarray:
    """Centre-crop to a square, bilinear-resize to ``size``², scale to float32 [0,1]: size×size×3."""
    return to_float(style_image_uint8(img, size))


def style_image_uint8(img: Image.Image, size: int = STYLE_SIZE) -> np.ndarray:
    """The normalised style image as uint8 (what the style library stores and hashes)."""
    img = center_crop_square(img.convert("RGB")).resize((size, size), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def content_image(img: Image.Image, size: tuple[int, int] | None = None) -> np.ndarray:
    """RGB float32 [0,1] H×W×3, optionally bilinear-resized to ``size`` = (width, height)."""
    img = img.convert("RGB")
    if size is not None and img.size != size:
        img = img.resize(size, Image.BILINEAR)
    return to_float(np.asarray(img))


# PIL modes whose pixels carry an alpha channel (straight or premultiplied).
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_GREY16_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


def on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Composite H×W×3 uint8 ``rgb`` over white with H×W uint8 ``alpha`` (rounded to nearest)."""
    a = alpha.astype(np.uint16)[..., None]
    return ((rgb.astype(np.uint16) * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)


def grey16_to_uint8(grey: np.ndarray) -> np.ndarray:
    """16-bit samples (0..65535, any integer dtype) → uint8 by their top 8 bits.  Raises
    ``ValueError`` when a value lies outside 0..65535."""
    if grey.size and (grey.min() < 0 or grey.max() > 0xFFFF):
        raise ValueError(f"16-bit image values must lie in 0..65535, got {grey.min()}..{grey.max()}: "
                         "convert it to 8 bits first, e.g. image.convert('L') or array.astype(np.uint8)")
    return (grey.astype(np.uint32) >> 8).astype(np.uint8)


def to_rgb(img: Image.Image) -> np.ndarray:
    """Any PIL image as H×W×3 uint8 RGB: the one conversion the server applies to decoded files
    and the SDK to PIL images, so both give the same pixels.

    16-bit greyscale (``I;16*``, and ``I`` within 0..65535) keeps its top 8 bits; alpha (and a
    palette's or PNG's transparency) is composited on white; other modes go through
    ``Image.convert("RGB")``.  Raises ``ValueError`` naming a conversion for ``F`` (float pixels
    have no fixed range) and for modes PIL cannot turn into RGB.
    """
    mode = img.mode
    if mode in _GREY16_MODES or mode == "I":
        grey = grey16_to_uint8(np.asarray(img))
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "F":
        raise ValueError("PIL mode F holds float pixels with no fixed range: convert it first, e.g. "
                         "image.convert('L') for values in 0..255, or pass np.asarray(image) for values in [0, 1]")
    if mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = np.asarray(img.convert("RGBA"))
        return on_white(rgba[..., :3], rgba[..., 3])
    try:
        return np.asarray(img.convert("RGB"))
    except ValueError as exc:
        raise ValueError(f"cannot convert PIL mode {mode} to RGB ({exc}): convert it to RGB first") from None


def to_float(x: np.ndarray) -> np.ndarray:
    """uint8 → float32 in [0,1].  A multiply: numpy's float32 division by 255 is ~20× slower."""
    return np.multiply(x, np.float32(1.0 / 255.0), dtype=np.float32)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """float [0,1] → uint8 with rounding and clipping (one float temporary, worked in place)."""
    y = np.multiply(x, np.float32(255.0), dtype=np.float32)
    np.rint(y, out=y)
    return np.clip(y, 0, 255, out=y).astype(np.uint8)
