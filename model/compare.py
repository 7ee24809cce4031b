"""Two models side by side on the user's own styles and photos (``stylecast models compare A B``).

A model is a package folder (run here on the LiteRT backend) or ``NAME:VERSION`` served by a
running server (run through the SDK; every picture is sent raw and answered raw, so nothing
is lost to JPEG).  Both run on every content photo (centre square at ``size``²) × every style:

- style score: centred cosine of a judge predictor's vector of the output and of the style
  image, in [−1, 1].  Each judge scores both models, so its two numbers compare.  The judges
  are the predictors of A and of B where they are package folders, plus the built-in
  package's where a side is a server model (unless a folder is the built-in package), or the
  one ``--judge``: a predictor tends to favour its own transformer's
  outputs (the built-in model scores 0.83 vs Magenta's 0.86 by the built-in predictor, 0.65 vs
  0.88 by Magenta's), so both views are shown.  Vectors are centred on
  the midpoint of the mean style vector and the mean content vector of the user's own folders,
  so an output scores > 0 when it moved from the photos towards the paintings in the judge's
  style space, and 1 when it points exactly the way its style does; it stays defined with a
  single style;
- SSIM of the grayscale output to the content, in [−1, 1] (1 = identical);
- flicker (:func:`~stylecast.model.quality.flicker`): each photo panned by 1, 2, 3, 5, 7 px,
  mean absolute difference 0–255 between the stylized moved frame and the moved stylized
  frame (lower is steadier); the styles take turns over the photos;
- speed: frames/s of one ``size``² stylize call at each speed size, the two models
  alternating in the same run with the same threads (a server model's figure is its
  end-to-end unary round trip, transport included).

Each metric gets a one-line verdict: which model is better and by how much, or "about the
same" within :data:`TOLERANCE` (speed: within a factor of 1.5, run-to-run noise on a loaded
machine).  The measures are those of ``make eval-model``
(:mod:`stylecast.model.scoring`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image, UnidentifiedImageError

from stylecast.backends.base import BackendOptions, create_backend
from stylecast.backends.package import PackageError, load_package, locate_package
from stylecast.model import BUILTIN_DIR, BUILTIN_MODEL
from stylecast.model.data import IMAGE_SUFFIXES
from stylecast.model.preprocess import style_image, to_float, to_uint8
from stylecast.model.quality import SHIFTS
from stylecast.model.scoring import Judge, Scores, contact_sheet, pan_strip, square

# A difference within this is "about the same": absolute for scores, relative (of the larger) for
# flicker and speed.  Speed: within a factor of 1.5 (1 - 1/1.5 of the faster), as frames/s timed
# for seconds on a shared, loaded machine move that much from run to run.
TOLERANCE = {"style": 0.02, "ssim": 0.01, "flicker": 0.05, "fps": 1 - 1 / 1.5}
FORMAT_PREFERENCE = ("tflite-int8", "tflite-fp16", "tflite-fp32")
SHEET_CONTENTS, SHEET_STYLES = 4, 5  # the contact sheet shows at most this many of each


class CompareError(Exception):
    """A folder, image or model that cannot be used; the message is one actionable line."""


class Model(Protocol):
    label: str
    description: str
    fixed_hw: tuple[int, int] | None  # (h, w) its transformer is baked to (contents scaled to it and back)

    def prepare(self, styles: Sequence[Path]) -> None:
        """Compute (or register) the model's own style vectors of these style images."""

    def stylize(self, content: np.ndarray, style: int) -> np.ndarray:
        """H×W×3 float32 [0,1] in style number ``style`` of :meth:`prepare` → H×W×3 float32 [0,1]."""

    def close(self) -> None: ...


def image_files(folder: Path, what: str) -> list[Path]:
    """The images in ``folder`` (by suffix), each checked readable by PIL.  Raises
    :class:`CompareError` for a missing or unreadable folder, no images, or a broken image."""
    if folder.exists() and not folder.is_dir():
        raise CompareError(f"{what} {folder}: a file, not a folder (give the folder holding the images)")
    if not folder.is_dir():
        raise CompareError(f"{what} folder {folder}: no such folder")
    try:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    except OSError as exc:
        raise CompareError(f"{what} folder {folder}: cannot be read ({exc.strerror or exc})") from None
    if not files:
        raise CompareError(f"{what} folder {folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    for p in files:
        try:
            with Image.open(p) as img:
                img.convert("RGB")
        except (UnidentifiedImageError, OSError) as exc:
            raise CompareError(f"{p}: not an image PIL can read ({exc})") from None
    return files


def tflite_format(fmt: str) -> str:
    """``int8``/``fp16``/``fp32`` or ``tflite-int8``/``tflite-fp16``/``tflite-fp32`` → the package format
    name (``tflite-…``); ``""`` stays ``""`` (each package's first of :data:`FORMAT_PREFERENCE`).
    Raises :class:`CompareError` for anything else."""
    full = fmt if fmt.startswith("tflite-") or not fmt else f"tflite-{fmt}"
    if full and full not in FORMAT_PREFERENCE:
        raise CompareError(f"--format {fmt}: one of int8, fp16, fp32 (or tflite-int8, tflite-fp16, tflite-fp32)")
    return full


class PackageModel:
    """A package folder run by the LiteRT backend (``fmt``: ``int8``/``fp16``/``fp32`` or its
    ``tflite-…`` name, else the package's first TFLite format of :data:`FORMAT_PREFERENCE`)."""

    def __init__(self, folder: Path, fmt: str = "", threads: int = 2):
        fmt = tflite_format(fmt)
        try:
            pkg = load_package(folder)
            tflite = [f for f in ((fmt,) if fmt else FORMAT_PREFERENCE) if f in pkg.artifacts]
            if not tflite:
                has = [f for f in FORMAT_PREFERENCE if f in pkg.artifacts]
                raise PackageError(f"has no {fmt or 'TFLite'} artifact (its TFLite formats: {', '.join(has) or 'none'}"
                                   + ("; leave out --format to run each package in its first of "
                                      "int8, fp16, fp32" if fmt else "") + ")")
            self.format = tflite[0]
            self.backend = create_backend("litert")
            self.backend.load(pkg, BackendOptions(format=self.format, threads=threads))
        except Exception as exc:  # noqa: BLE001 - any load failure is the user's package: one line
            raise CompareError(f"package {folder} failed to load: {exc}") from None
        self.label = f"{pkg.name}:{pkg.version}"
        self.folder = Path(folder)
        self.fixed_hw = self.backend.fixed_hw  # a transformer baked to one size runs there, scaled
        baked = f", stylizes at its fixed {self.fixed_hw[0]}x{self.fixed_hw[1]}" if self.fixed_hw else ""
        self.description = f"package {folder} ({self.format}, LiteRT, {threads} threads{baked})"
        self.vectors: np.ndarray | None = None

    def predict_style(self, images: np.ndarray) -> np.ndarray:
        """N×256×256×3 float32 [0,1] → N×D."""
        return self.backend.predict_style(images)

    def prepare(self, styles: Sequence[Path]) -> None:
        self.vectors = self.predict_style(np.stack([style_image(Image.open(p)) for p in styles]))

    def stylize(self, content: np.ndarray, style: int) -> np.ndarray:
        return self.backend.stylize(content[None], self.vectors[style][None])[0]

    def close(self) -> None:
        self.backend.close()


class ServerModel:
    """``NAME:VERSION`` served by a running server, through an SDK :class:`~stylecast.client.sdk.Client`:
    every call pins the version (``StreamConfig.model_version``; the server refuses a version it has
    not loaded, naming those it has).  Raises :class:`CompareError` if an answer comes from another
    model or version."""

    def __init__(self, client, spec: str):
        self.client = client
        self.name, _, self.version = spec.partition(":")
        self.label = spec
        self.fixed_hw = None  # what the server runs is its own business
        self.description = f"{spec} on the server (end-to-end unary calls, raw frames)"
        self.style_ids: list[str] = []

    def prepare(self, styles: Sequence[Path]) -> None:
        self.style_ids = [self.client.register_style(p, name=p.stem).id for p in styles]

    def stylize(self, content: np.ndarray, style: int) -> np.ndarray:
        h, w = content.shape[:2]
        result = self.client.stylize(to_uint8(content), self.style_ids[style], output="raw",
                                     process_max_side=max(h, w), model=self.name, model_version=self.version)
        if (result.model, result.model_version) != (self.name, self.version):
            raise CompareError(f"the server answered with {result.model}:{result.model_version}, not {self.label}: "
                               f"serve that version first (stylecast models load {self.name} --version {self.version})")
        return to_float(result.to_array())

    def close(self) -> None:
        pass


def builtin_package() -> Path:
    """The newest version's folder of the built-in real-time tier (what ``stylecast serve`` serves by default)."""
    try:
        return locate_package(BUILTIN_DIR, BUILTIN_MODEL).path
    except PackageError as exc:
        raise CompareError(f"no built-in package: {exc}") from None


@dataclass
class Verdict:
    metric: str
    a: float
    b: float
    higher_is_better: bool
    relative: bool
    tolerance: float

    @property
    def difference(self) -> float:
        """How much better A is than B (> 0: A better), absolute or relative to the larger."""
        d = (self.a - self.b) if self.higher_is_better else (self.b - self.a)
        return d / max(abs(self.a), abs(self.b), 1e-12) if self.relative else d

    def line(self, a: str, b: str) -> str:
        d = self.difference
        tol = f"a factor of {1 / (1 - self.tolerance):.2f}" if self.relative else f"±{self.tolerance:.2f}"
        lo, hi = sorted((abs(self.a), abs(self.b)))
        by = f"a factor of {hi / max(lo, 1e-12):.2f}" if self.relative else f"{abs(d):.3f}"
        values = f"{self.a:.3f} vs {self.b:.3f}"
        if abs(d) <= self.tolerance:
            return f"{self.metric}: about the same ({values}; within {tol})"
        return f"{self.metric}: {a if d > 0 else b} better by {by} ({values}; tolerance {tol})"


@dataclass
class Report:
    a: str
    b: str
    descriptions: tuple[str, str]
    judge: str
    size: int
    contents: int
    styles: int
    verdicts: list[Verdict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    sheet: Path | None = None
    sheet_size: tuple[int, int] = (0, 0)

    def lines(self) -> list[str]:
        out = [f"A = {self.a}: {self.descriptions[0]}", f"B = {self.b}: {self.descriptions[1]}",
               f"{self.contents} content photo(s) x {self.styles} style(s) at {self.size}^2; "
               f"flicker over pans of {SHIFTS} px",
               f"style score judged by {self.judge}",
               *(f"warning: {w}" for w in self.warnings),
               f"{'metric':28s} {'A':>9s} {'B':>9s}"]
        for v in self.verdicts:
            arrow = "higher is better" if v.higher_is_better else "lower is better"
            out.append(f"{v.metric:28s} {v.a:9.3f} {v.b:9.3f}   ({arrow})")
        out += [v.line("A", "B") for v in self.verdicts]
        if self.sheet is not None:
            out.append(f"contact sheet: {self.sheet} ({self.sheet_size[0]}x{self.sheet_size[1]})")
        return out


def baked_sizes(models: Sequence[Model], sizes: Sequence[int]) -> list[str]:
    """One line per model whose transformer is baked to a size other than those asked (it stylizes
    there, scaled, so quality and speed are not like-for-like)."""
    out = []
    for ab, m in zip("AB", models):
        if m.fixed_hw is not None and any((n, n) != tuple(m.fixed_hw) for n in sizes):
            h, w = m.fixed_hw
            out.append(f"{ab} ({m.label}) stylizes every picture at its fixed {h}x{w} (scaled to it and back), "
                       f"not at {', '.join(f'{n}^2' for n in dict.fromkeys(sizes))}: not like-for-like; for a "
                       "Magenta model, import it with --resizable (stylecast model import-magenta ... --resizable)")
    return out


def _fps(models: Sequence[Model], content: np.ndarray, frames: int, rounds: int) -> list[float]:
    """Frames/s of each model on ``content``, one warm-up call each, then ``rounds`` rounds of
    ``frames`` calls in alternating order."""
    for m in models:
        m.stylize(content, 0)
    spent = [0.0] * len(models)
    for r in range(rounds):
        order = range(len(models)) if r % 2 == 0 else reversed(range(len(models)))
        for i in order:
            t0 = time.perf_counter()
            for _ in range(frames):
                models[i].stylize(content, 0)
            spent[i] += time.perf_counter() - t0
    return [frames * rounds / s for s in spent]


def compare(a: Model, b: Model, judges: Sequence[tuple[str, PackageModel]], styles: Sequence[Path],
            contents: Sequence[Path],
            size: int = 384, speed_sizes: Sequence[int] = (384, 512), speed_frames: int = 5,
            speed_rounds: int = 2, sheet: Path | None = None,
            progress: Callable[[int], None] | None = None) -> Report:
    """Evaluate ``a`` and ``b`` (see the module docstring), with a style score per judge (name, package
    model whose predictor scores); with ``sheet``, write the contact sheet
    PNG (:func:`~stylecast.model.scoring.contact_sheet`): per content photo, a row of A's outputs
    then a row of B's (each labelled), one column per style, then panning rows of the first photo; ``progress(n)`` is called after each photo and each timed size.
    Raises :class:`CompareError` (and whatever the SDK raises)."""
    s_imgs = np.stack([style_image(Image.open(p)) for p in styles])
    c_imgs = np.stack([style_image(Image.open(p)) for p in contents])
    panel = []  # (name, Judge, its vectors of the styles)
    for name, model in judges:
        vectors = model.predict_style(s_imgs)
        panel.append((name, Judge(model.predict_style, 0.5 * (vectors.mean(0) + model.predict_style(c_imgs).mean(0))),
                      vectors))
    models = (a, b)
    keys = (f"A = {a.label}", f"B = {b.label}")  # row labels (A and B may be the same model)
    for m in models:
        m.prepare(styles)
    scores = [Scores(), Scores()]  # style by the first judge
    more_styles = [{name: [] for name, _, _ in panel[1:]} for _ in models]  # style by the others
    cells, pans = [], None
    for ci, path in enumerate(contents):
        c = square(path, size)
        for s in range(len(styles)):
            outs = {}
            for k, m, sc, more in zip(keys, models, scores, more_styles):
                outs[k] = out = m.stylize(c, s)
                sc.add(panel[0][1], out, c, panel[0][2][s])
                for name, judge, vectors in panel[1:]:
                    more[name].append(judge.style_score(out, vectors[s]))
            if ci < SHEET_CONTENTS and s < SHEET_STYLES:
                cells.append((ci, s, c, outs))
        s = ci % len(styles)
        strip = pan_strip(path, size)
        nets = {k: (lambda f, m=m, s=s: m.stylize(f, s)) for k, m in zip(keys, models)}
        for k, sc in zip(keys, scores):
            sc.add_flicker(nets[k], strip)
        if pans is None:
            pans = (strip, nets)
        if progress is not None:
            progress(1)
    ma, mb = (sc.means() for sc in scores)
    style = {panel[0][0]: (ma["style"], mb["style"])} | {
        name: (float(np.mean(more_styles[0][name])), float(np.mean(more_styles[1][name]))) for name, _, _ in panel[1:]}
    verdicts = [Verdict("style score" if len(panel) == 1 else f"style score ({name})", *ab, True, False,
                        TOLERANCE["style"]) for name, ab in style.items()]
    verdicts += [Verdict("SSIM to content", ma["ssim"], mb["ssim"], True, False, TOLERANCE["ssim"]),
                 Verdict("flicker (0-255)", ma["flicker"], mb["flicker"], False, True, TOLERANCE["flicker"])]
    for n in speed_sizes:
        photo = square(contents[0], n)
        fa, fb = _fps(models, photo, speed_frames, speed_rounds)
        verdicts.append(Verdict(f"speed {n}^2 (frames/s)", fa, fb, True, True, TOLERANCE["fps"]))
        if progress is not None:
            progress(1)
    report = Report(a.label, b.label, (a.description, b.description),
                    "; ".join(name if name[1:] == "'s predictor" else f"{name} (package {m.folder})"
                              for name, m in judges),
                    size, len(contents), len(styles), verdicts, baked_sizes(models, (size, *speed_sizes)))
    if sheet is not None:
        contact_sheet(cells, s_imgs, pans, sheet, title=f"styles ->   per photo (left), one row per model: {keys[0]}, "
                                                        f"then {keys[1]}",
                      pan_title="panning (1,2,3,5,7 px; frames moved back): what changes is flicker")
        with Image.open(sheet) as img:
            report.sheet, report.sheet_size = sheet, img.size
    return report
