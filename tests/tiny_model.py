"""Export the tiny random test package with style vectors that vary from image to image.

``python tests/tiny_model.py OUT_DIR`` writes ``OUT_DIR/tiny/1`` through the project's
exporter (``stylecast.model.export.tiny_test_package``).  A freshly initialised
predictor's hidden activations barely change between images (std ~1e-4), so every
image maps to almost the same vector and tests of strength, blends and search could
not fail.  Before export the predictor's last layer is rescaled and centred on a
few synthetic images, giving vectors of unit spread.  Run in a subprocess by
``conftest.py`` so the test process never imports TensorFlow.
"""

from __future__ import annotations

import sys

import numpy as np

import stylecast.model.export as export

_export_package = export.export_package


def _spread_style_vectors(predictor) -> None:
    import keras  # noqa: PLC0415

    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:256, 0:256] / 256.0
    images = np.stack([np.stack([0.5 + 0.5 * np.sin(rng.uniform(2, 30) * x + rng.uniform(2, 30) * y
                                                     + rng.uniform(0, 6)) for _ in range(3)], -1)
                       for _ in range(16)]).astype("float32")
    hidden = keras.Model(predictor.input, predictor.get_layer("hidden").output)(images).numpy()
    layer = predictor.get_layer("style_vector")
    kernel = rng.normal(0, 1, layer.kernel.shape) / ((hidden.std(axis=0).mean() + 1e-9) * np.sqrt(hidden.shape[1]))
    layer.kernel.assign(kernel.astype("float32"))
    layer.bias.assign((-hidden.mean(axis=0) @ kernel).astype("float32"))


def _export_with_spread_vectors(predictor, transformer, *args, **kwargs):
    _spread_style_vectors(predictor)
    return _export_package(predictor, transformer, *args, **kwargs)


if __name__ == "__main__":
    export.export_package = _export_with_spread_vectors
    export.tiny_test_package(sys.argv[1])
