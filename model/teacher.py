"""The Magenta teacher (TFLite, run with LiteRT): style predictor and 384² transformer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter

PREDICT_FILE = "style_predict_quantized_256.tflite"
TRANSFER_FILE = "style_transfer_quantized_384.tflite"
TEACHER_SIZE = 384


class Teacher:
    """Runs the teacher pair one image at a time (its files have batch 1 baked in)."""

    def __init__(self, models_dir: Path, threads: int = 2):
        self.predictor = Interpreter(model_path=str(models_dir / PREDICT_FILE), num_threads=threads)
        self.transfer = Interpreter(model_path=str(models_dir / TRANSFER_FILE), num_threads=threads)
        for it in (self.predictor, self.transfer):
            it.allocate_tensors()
        self._p_in = self.predictor.get_input_details()[0]["index"]
        self._p_out = self.predictor.get_output_details()[0]["index"]
        names = {d["name"]: d["index"] for d in self.transfer.get_input_details()}
        self._t_content = names["content_image"]
        self._t_style = names["mobilenet_conv/Conv/BiasAdd"]
        self._t_out = self.transfer.get_output_details()[0]["index"]

    def predict_style(self, images: np.ndarray) -> np.ndarray:
        """N×256×256×3 float32 [0,1] → N×100."""
        out = []
        for img in images:
            self.predictor.set_tensor(self._p_in, img[None].astype(np.float32))
            self.predictor.invoke()
            out.append(self.predictor.get_tensor(self._p_out).reshape(-1))
        return np.stack(out)

    def stylize(self, content: np.ndarray, styles: np.ndarray) -> np.ndarray:
        """N×384×384×3 float32 [0,1] + N×100 → N×384×384×3."""
        out = []
        for c, s in zip(content, styles):
            self.transfer.set_tensor(self._t_content, c[None].astype(np.float32))
            self.transfer.set_tensor(self._t_style, s.reshape(1, 1, 1, -1).astype(np.float32))
            self.transfer.invoke()
            out.append(self.transfer.get_tensor(self._t_out)[0].copy())
        return np.stack(out)
