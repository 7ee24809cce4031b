"""The Magenta teacher (TFLite): the user's-own-files import path, run on the LiteRT backend."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from stylecast.backends.base import BackendOptions
from stylecast.backends.litert import LiteRTBackend
from stylecast.model.magenta import import_magenta

PREDICT_FILE = "style_predict_quantized_256.tflite"
TRANSFER_FILE = "style_transfer_quantized_384.tflite"
TEACHER_SIZE = 384
BOTTLENECK_TENSOR = "bottleneck/Mean"  # the predictor's pooled MobileNetV2 features, before its last 1×1 conv
BOTTLENECK_DIM = 1280


class Teacher:
    """The teacher pair imported as a package (in a temporary folder) and served by LiteRT.

    Its transformer is baked to 384²: feed it 384² content (the backend would scale
    any other size to 384 and back).  ``transfer`` names the transformer file in
    ``models_dir``: by default Magenta's int8 one; ``teacher_port.TEACHER_F16`` is the same
    network with its weights at fp16 (the file the v5 recipe learns from). ``close()`` (or a
    ``with`` block) releases the interpreters and deletes the temporary folder.  ``package``: the
    imported :class:`~stylecast.backends.package.ModelPackage` (its folder in that temporary one).
    """

    def __init__(self, models_dir: Path, threads: int = 2, transfer: str = TRANSFER_FILE):
        self._models_dir, self._threads, self._bottleneck = models_dir, threads, None
        self._dir = tempfile.TemporaryDirectory(prefix="stylecast-teacher-")
        self.package = package = import_magenta(models_dir / PREDICT_FILE, models_dir / transfer, self._dir.name)
        self._backend = LiteRTBackend()
        self._backend.load(package, BackendOptions(format=next(iter(package.artifacts)), threads=threads))

    def __enter__(self) -> Teacher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release the interpreters and delete the imported package; the teacher is unusable after."""
        self._backend.close()
        self._bottleneck = None
        self._dir.cleanup()

    def predict_style(self, images: np.ndarray) -> np.ndarray:
        """N×256×256×3 float32 [0,1] → N×100."""
        return self._backend.predict_style(images)

    def bottleneck(self, images: np.ndarray) -> np.ndarray:
        """N×256×256×3 float32 [0,1] → N×1280 float32: the teacher predictor's pooled features
        (mean over 8×8 of MobileNetV2's ReLU6 ``Conv_1``, so in [0, 6]), dequantized from int8
        (step 6/255). The style vector is one 1×1 convolution of these. Read with LiteRT's
        ``experimental_preserve_all_tensors``; the tensor is a delegate's output, so XNNPACK
        stays on."""
        if self._bottleneck is None:
            it = Interpreter(model_path=str(self._models_dir / PREDICT_FILE), num_threads=self._threads,
                             experimental_preserve_all_tensors=True)
            it.allocate_tensors()
            detail = {d["name"]: d for d in it.get_tensor_details()}[BOTTLENECK_TENSOR]
            self._bottleneck = (it, it.get_input_details()[0]["index"], detail["index"], *detail["quantization"])
        it, source, tensor, scale, zero = self._bottleneck
        out = np.empty((len(images), BOTTLENECK_DIM), np.float32)
        for i in range(len(images)):
            it.set_tensor(source, np.ascontiguousarray(images[i:i + 1], np.float32))
            it.invoke()
            out[i] = (it.get_tensor(tensor).reshape(-1).astype(np.float32) - zero) * scale
        return out

    def stylize(self, content: np.ndarray, styles: np.ndarray) -> np.ndarray:
        """N×384×384×3 float32 [0,1] + N×100 → N×384×384×3."""
        return self._backend.stylize(content, styles)
