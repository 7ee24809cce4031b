"""Picture-quality measures shared by offline evaluation and serving (numpy only).

Every image is H×W×3 float in [0, 1] unless said otherwise; scores are plain floats.
"""

from __future__ import annotations

import numpy as np


def centred_cos(a: np.ndarray, b: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Cosine of ``a − mean`` and ``b − mean`` along the last axis (…×D style vectors; the
    mean is the predictor's mean vector over a style set), in [−1, 1]; shape ``a.shape[:-1]``."""
    a, b = a - mean, b - mean
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-12)


def gray_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM of two RGB [0,1] images on luma, Gaussian window 11, σ 1.5 (Wang et al. 2004)."""
    w = np.array([0.299, 0.587, 0.114], np.float64)
    a, b = x.astype(np.float64) @ w, y.astype(np.float64) @ w
    g = np.exp(-0.5 * (np.arange(11) - 5) ** 2 / 1.5**2)
    g /= g.sum()

    def blur(z):  # separable 'valid' Gaussian filter
        z = np.lib.stride_tricks.sliding_window_view(z, 11, axis=0) @ g
        return np.lib.stride_tricks.sliding_window_view(z, 11, axis=1) @ g

    c1, c2 = 0.01**2, 0.03**2
    ma, mb = blur(a), blur(b)
    va, vb, cov = blur(a * a) - ma**2, blur(b * b) - mb**2, blur(a * b) - ma * mb
    s = ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
    return float(s.mean())


def psnr(x: np.ndarray, y: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two same-shape [0, 1] images (peak 1)."""
    return float(-10 * np.log10(np.mean((x.astype(np.float64) - y) ** 2) + 1e-12))


SHIFTS = (1, 2, 3, 5, 7)  # pan steps of the flicker measure (px)
RING = 8  # width of the border rings compared by border_score (px)


def flicker(stylize, strip: np.ndarray, shifts=SHIFTS, margin: int = 16) -> float:
    """Mean |stylize(moved) − moved(stylize)| on the interior, 0–255, averaged over ``shifts``.

    ``strip`` is H×(W+max shift)×3 float [0,1]; frame 0 is its first W columns, frame d its
    columns d…d+W (the camera panned right by d px), so frame d's column j shows frame 0's
    column j+d.  ``stylize`` maps an H×W×3 frame to H×W×3 [0,1].  The outer ``margin`` px
    of each frame are left out, so border effects do not count as flicker."""
    w = strip.shape[1] - max(shifts)
    base = stylize(strip[:, :w])
    h = base.shape[0]
    diffs = []
    for d in shifts:
        moved = stylize(strip[:, d:d + w])
        a = moved[margin:h - margin, margin:w - margin - d]
        b = base[margin:h - margin, margin + d:w - margin]
        diffs.append(np.abs(a.astype(np.float64) - b).mean() * 255)
    return float(np.mean(diffs))


def border_score(img: np.ndarray, ring: int = RING) -> float:
    """|mean colour of the outer ``ring`` px − mean colour of the next ``ring`` px|, averaged
    over channels, 0–255 (``img`` H×W×C float [0,1], H and W > 4·ring)."""
    x = img.astype(np.float64)
    h, w = x.shape[:2]
    mask = np.zeros((h, w), bool)
    mask[:ring], mask[-ring:], mask[:, :ring], mask[:, -ring:] = True, True, True, True
    inner = np.zeros((h, w), bool)
    inner[ring:2 * ring], inner[h - 2 * ring:h - ring] = True, True
    inner[:, ring:2 * ring], inner[:, w - 2 * ring:w - ring] = True, True
    inner &= ~mask
    return float(np.abs(x[mask].mean(0) - x[inner].mean(0)).mean() * 255)
