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


def to_float(x: np.ndarray) -> np.ndarray:
    """uint8 → float32 in [0,1].  A multiply: numpy's float32 division by 255 is ~20× slower."""
    return np.multiply(x, np.float32(1.0 / 255.0), dtype=np.float32)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """float [0,1] → uint8 with rounding and clipping (one float temporary, worked in place)."""
    y = np.multiply(x, np.float32(255.0), dtype=np.float32)
    np.rint(y, out=y)
    return np.clip(y, 0, 255, out=y).astype(np.uint8)
