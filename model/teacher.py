"""The Magenta teacher (TFLite): the user's-own-files import path, run on the LiteRT backend."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from stylecast.backends.base import BackendOptions
from stylecast.backends.litert import LiteRTBackend
from stylecast.model.magenta import import_magenta

PREDICT_FILE = "style_predict_quantized_256.tflite"
TRANSFER_FILE = "style_transfer_quantized_384.tflite"
TEACHER_SIZE = 384


class Teacher:
    """The teacher pair imported as a package (in a temporary folder) and served by LiteRT.

    Its transformer is baked to 384²: feed it 384² content (the backend would scale
    any other size to 384 and back).
    """

    def __init__(self, models_dir: Path, threads: int = 2):
        self._dir = tempfile.TemporaryDirectory(prefix="stylecast-teacher-")
        package = import_magenta(models_dir / PREDICT_FILE, models_dir / TRANSFER_FILE, self._dir.name)
        self._backend = LiteRTBackend()
        self._backend.load(package, BackendOptions(format=next(iter(package.artifacts)), threads=threads))

    def predict_style(self, images: np.ndarray) -> np.ndarray:
        """N×256×256×3 float32 [0,1] → N×100."""
        return self._backend.predict_style(images)

    def stylize(self, content: np.ndarray, styles: np.ndarray) -> np.ndarray:
        """N×384×384×3 float32 [0,1] + N×100 → N×384×384×3."""
        return self._backend.stylize(content, styles)
