"""Input checks and fitting content to what a model file accepts, and back.

Every backend feeds the transformer content whose H and W are multiples of 16
(edge-padded, cropped after); a file baked to one size (``fixed_hw``) is fed by
bilinear scaling to that size and back instead.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

from stylecast.backends.base import BackendError, pad_to_multiple

STYLE_HW = (256, 256)


def style_images(images: np.ndarray) -> np.ndarray:
    """Check N×256×256×3 style images; return them as contiguous float32."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != (*STYLE_HW, 3) or images.shape[0] == 0:
        raise BackendError(f"style images must be N×256×256×3, got {images.shape}")
    return np.ascontiguousarray(images, dtype=np.float32)


def stylize_inputs(content: np.ndarray, styles: np.ndarray, style_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Check N×H×W×3 content and N style vectors (N×D, or any N×…×D holding D values)."""
    content, styles = np.asarray(content), np.asarray(styles)
    if content.ndim != 4 or content.shape[-1] != 3 or 0 in content.shape:
        raise BackendError(f"content must be N×H×W×3 with N, H, W > 0, got {content.shape}")
    n = content.shape[0]
    if styles.ndim < 1 or styles.shape[0] != n or styles.size != n * style_dim:
        raise BackendError(f"styles must be {n}×{style_dim} for {n} content images, got {styles.shape}")
    return (np.ascontiguousarray(content, dtype=np.float32),
            np.ascontiguousarray(styles.reshape(n, style_dim), dtype=np.float32))


def fit(content: np.ndarray, fixed_hw: tuple[int, int] | None) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """Fit N×H×W×3 content for the model; return it and the function restoring H×W."""
    h, w = content.shape[1:3]
    if fixed_hw is None:
        padded, _, _ = pad_to_multiple(content)
        return padded, lambda y: np.ascontiguousarray(y[:, :h, :w, :])
    if (h, w) == tuple(fixed_hw):
        return content, lambda y: y
    return resize_bilinear(content, fixed_hw), lambda y: resize_bilinear(y, (h, w))


def resize_bilinear(x: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Bilinear (antialiased when shrinking, as PIL does) resize of N×H×W×C float32 to ``hw``."""
    n, _, _, c = x.shape
    out = np.empty((n, hw[0], hw[1], c), dtype=np.float32)
    for i in range(n):
        for ch in range(c):
            img = Image.fromarray(np.ascontiguousarray(x[i, :, :, ch], dtype=np.float32))
            out[i, :, :, ch] = np.asarray(img.resize((hw[1], hw[0]), Image.BILINEAR))
    return out
