"""Per-model evaluation shared by ``make eval-model`` and ``stylecast models compare``.

A :class:`Judge` is one fixed style predictor and a centre vector: it scores how strongly
an output carries a style.  :class:`Scores` collects, for one model, the per-picture
measures of :mod:`stylecast.model.quality` (style score, grayscale SSIM to the content,
PSNR to a reference output, border, flicker on a panning strip) and averages them.
:func:`contact_sheet` draws each network's outputs in stacked rows, with panning rows.

Every image is H×W×3 float32 in [0, 1]; style vectors are D-vectors (D = 100).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from stylecast.model.preprocess import center_crop_square, content_image, style_image, to_uint8
from stylecast.model.quality import SHIFTS, border_score, centred_cos, flicker, gray_ssim, psnr

Frame = Callable[[np.ndarray], np.ndarray]  # H×W×3 [0,1] → H×W×3 [0,1] (one network in one style)


def pan_strip(path: Path, size: int) -> np.ndarray:
    """A size×(size+max shift) strip of a photo (centre square, resized so the strip fits)."""
    img = Image.open(path).convert("RGB")
    w, h = img.size
    s = min(h, w * size // (size + max(SHIFTS)))
    box = ((w - s * (size + max(SHIFTS)) // size) // 2, (h - s) // 2)
    crop = img.crop((box[0], box[1], box[0] + s * (size + max(SHIFTS)) // size, box[1] + s))
    return content_image(crop, (size + max(SHIFTS), size))


def to_256(img: np.ndarray) -> np.ndarray:
    """An output as the predictor sees a style image (the serving preprocessing)."""
    return style_image(Image.fromarray(to_uint8(img)))


def square(path: Path, size: int) -> np.ndarray:
    """The centre square of a photo, bilinear to size², float32 [0,1]."""
    return content_image(center_crop_square(Image.open(path)), (size, size))


@dataclass
class Judge:
    """One style predictor (N×256×256×3 [0,1] → N×D) and the centre its vectors are compared
    around (a D-vector: the mean vector over a set of images)."""

    predict_style: Callable[[np.ndarray], np.ndarray]
    mean: np.ndarray

    def style_score(self, out: np.ndarray, style_vector: np.ndarray) -> float:
        """Centred cosine, in [−1, 1], of the predictor's vector of ``out`` (seen as a style image)
        and ``style_vector`` (the same predictor's vector of the style image)."""
        return float(centred_cos(self.predict_style(to_256(out)[None])[0], style_vector, self.mean))


@dataclass
class Scores:
    """Per-picture measures of one model; :meth:`means` averages each measure taken at least once."""

    style: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)
    psnr: list[float] = field(default_factory=list)
    psnr_f16: list[float] = field(default_factory=list)
    border: list[float] = field(default_factory=list)
    flicker: list[float] = field(default_factory=list)

    def add(self, judge: Judge, out: np.ndarray, content: np.ndarray, style_vector: np.ndarray,
            ref: np.ndarray | None = None, ref_f16: np.ndarray | None = None) -> None:
        """One output of ``content`` in the style whose judge vector is ``style_vector``; with ``ref``
        (another network's output of the same pair), also its PSNR to it; with ``ref_f16`` (the
        teacher's output through its fp16-weight file), also ``psnr_f16``."""
        self.style.append(judge.style_score(out, style_vector))
        self.ssim.append(gray_ssim(out, content))
        self.border.append(border_score(out))
        if ref is not None:
            self.psnr.append(psnr(out, ref))
        if ref_f16 is not None:
            self.psnr_f16.append(psnr(out, ref_f16))

    def add_flicker(self, frame: Frame, strip: np.ndarray) -> None:
        """Flicker (0–255) of one network on one panning strip (:func:`pan_strip`)."""
        self.flicker.append(flicker(frame, strip))

    def means(self) -> dict[str, float]:
        return {k: float(np.mean(v)) for k, v in vars(self).items() if v}


def _label(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str) -> None:
    """Black text on a white box (readable over a picture)."""
    box = draw.textbbox(xy, text)
    draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill="white")
    draw.text(xy, text, fill="black")


def contact_sheet(cells, style_imgs: np.ndarray, pans, path: Path, title: str, pan_title: str,
                  cell: int = 160) -> None:
    """Write a PNG: a row of styles; per content, its rows stacked: one row per network (each
    labelled on its first picture), the content photo at the left of the first; then the panning
    rows: the same scene moved 0, 1, 2, 3, 5, 7 px, each frame shifted back so the scene stands
    still (what changes between frames is flicker), one labelled row per network.

    ``cells``: (content index, style index, content, {label: output}) in the same label order;
    ``pans``: (strip, {label: frame function}).  The sheet is W = max(styles + 1, 4)·cell wide and
    (1 + networks·contents)·cell + 40 + networks·p high, p = min(cell, (W − cell) // 6) the side
    of a panning tile (so the sheet is no wider than its pictures need)."""
    n_c = max(c[0] for c in cells) + 1
    n_s = max(c[1] for c in cells) + 1
    labels = list(cells[0][3])
    per = len(labels)
    strip, nets = pans
    width = max(n_s + 1, 4) * cell
    p = min(cell, (width - cell) // (len(SHIFTS) + 1))
    sheet = Image.new("RGB", (width, (1 + per * n_c) * cell + 40 + len(nets) * p), "white")
    draw = ImageDraw.Draw(sheet)
    u8 = lambda a: Image.fromarray(to_uint8(a)).resize((cell, cell))  # noqa: E731
    for s in range(n_s):
        sheet.paste(u8(style_imgs[s]), ((s + 1) * cell, 20))
    draw.text((4, 4), title, fill="black")
    for ci, s, c, outs in cells:
        y = 20 + (1 + per * ci) * cell
        sheet.paste(u8(c), (0, y))
        for j, k in enumerate(labels):
            sheet.paste(u8(outs[k]), ((s + 1) * cell, y + j * cell))
            if s == 0:
                _label(draw, (cell + 4, y + j * cell + 4), k)
    y0 = 40 + (1 + per * n_c) * cell
    draw.text((4, y0 - 16), pan_title, fill="black")
    w = strip.shape[1] - max(SHIFTS)
    t = min(cell, strip.shape[0], (w - 16) * 2 // 3) // 2 * 2  # the tile cut from each frame (cell unless small)
    crop = slice(strip.shape[0] // 2 - t // 2, strip.shape[0] // 2 + t // 2)
    for r, (name, fn) in enumerate(nets.items()):
        y = y0 + r * p
        draw.text((4, y + 4), name[:24], fill="black")
        for j, d in enumerate((0,) + SHIFTS):
            frame = fn(strip[:, d:d + w])  # the scene at column j + d of frame 0 is frame d's column j
            x0 = t // 2 + 16 - d
            tile = Image.fromarray(to_uint8(frame[crop, x0:x0 + t]))
            sheet.paste(tile if t == p else tile.resize((p, p)), (cell + j * p, y))
    sheet.quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)  # keep committed PNGs small
