"""CPU thread limits for the training tools."""

from __future__ import annotations


def limit_threads(threads: int) -> None:
    """Cap TensorFlow's intra-op pool at ``threads`` (one inter-op thread) when it is the Keras
    backend, through :func:`~stylecast.backends.savedmodel.configure_threads` (a runtime already
    started keeps its pools, with a warning); another backend keeps its own pools."""
    import keras  # noqa: PLC0415

    if keras.backend.backend() == "tensorflow":
        from stylecast.backends.savedmodel import configure_threads  # noqa: PLC0415 - TensorFlow only here

        configure_threads(threads)
