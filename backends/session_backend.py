"""The base class of backends whose runtime session is thread-safe (ONNX Runtime, TensorFlow)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stylecast.backends.fit import STYLE_HW, fit, style_images, stylize_inputs


class SessionBackend:
    """warmup / predict_style / stylize / memory_bytes for backends whose runtime session is
    thread-safe and called through one ``_call(endpoint, arrays)`` (ONNX Runtime, TensorFlow).

    Subclasses set ``_eps`` (endpoint name → Endpoint), ``_style_dim`` and ``_memory``
    (an ``RssGrowth`` or None) in ``load``, and implement ``_call`` and ``_device_bytes``.
    """

    def _call(self, endpoint: str, arrays: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def _device_bytes(self) -> int:
        return 0

    def warmup(self, shapes: Sequence[tuple[int, int]]) -> None:
        """Run the style predictor once and one stylize per (H, W) (tracing/compiling on first use)."""
        self.predict_style(np.full((1, *STYLE_HW, 3), 0.5, np.float32))
        for h, w in shapes:
            self.stylize(np.full((1, h, w, 3), 0.5, np.float32), np.zeros((1, self._style_dim), np.float32))
        if self._memory:
            self._memory.update()

    def predict_style(self, images: np.ndarray) -> np.ndarray:
        images = style_images(images)
        return self._call("predict_style", {"image": images}).reshape(images.shape[0], self._style_dim)

    def stylize(self, content: np.ndarray, styles: np.ndarray) -> np.ndarray:
        content, styles = stylize_inputs(content, styles, self._style_dim)
        x, restore = fit(content, self._eps["stylize"].fixed_hw if self._eps else None)
        return restore(self._call("stylize", {"content": x, "style": styles}))

    def memory_bytes(self) -> dict[str, int]:
        """Host: RSS growth over load and warmup (an estimate); device: the runtime's own figure."""
        return {"host": self._memory.bytes if self._memory else 0, "device": self._device_bytes()}
