"""TensorFlow SavedModel backend: dynamic shapes, thread pools from the options, optional XLA.

TensorFlow fixes its intra-/inter-op thread pools when its runtime context
starts, i.e. at the first op anywhere in the process.  ``load`` sets them from
``BackendOptions.threads`` (intra-op) and 1 inter-op thread (the two networks
are single chains) before its first op; if another part of the process already
ran TensorFlow with other settings, they cannot change any more, and ``load``
logs a warning and keeps the existing pools.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from stylecast.backends.base import BackendError, BackendOptions, check_format
from stylecast.backends.endpoints import Endpoint, endpoints
from stylecast.backends.memory import RssGrowth
from stylecast.backends.package import ModelPackage
from stylecast.backends.session_backend import SessionBackend

log = logging.getLogger(__name__)

INTER_OP_THREADS = 1


def configure_threads(intra: int, inter: int = INTER_OP_THREADS) -> bool:
    """Set TensorFlow's thread pools; False (and a warning) if the runtime already started otherwise."""
    threading = tf.config.threading
    if (threading.get_intra_op_parallelism_threads(), threading.get_inter_op_parallelism_threads()) == (intra, inter):
        return True
    try:
        threading.set_intra_op_parallelism_threads(intra)
        threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:
        log.warning("TensorFlow already started with %d intra-op / %d inter-op threads; "
                    "cannot switch to %d / %d in this process",
                    threading.get_intra_op_parallelism_threads(),
                    threading.get_inter_op_parallelism_threads(), intra, inter)
        return False
    return True


def _gpu_bytes() -> int:
    total = 0
    for i, _ in enumerate(tf.config.list_logical_devices("GPU")):
        total += int(tf.config.experimental.get_memory_info(f"GPU:{i}")["current"])
    return total


class SavedModelBackend(SessionBackend):
    """The Backend protocol on a TensorFlow SavedModel with ``predict_style`` and ``stylize`` signatures."""

    name = "savedmodel"

    def __init__(self) -> None:
        self._fns: dict[str, Callable[..., dict]] = {}
        self._eps: dict[str, Endpoint] = {}
        self._model = None
        self._style_dim = 0
        self._memory: RssGrowth | None = None

    def load(self, package: ModelPackage, options: BackendOptions) -> None:
        """Verify the ``savedmodel`` artifact, set thread pools, load it (XLA-compiled if ``options.xla``)."""
        check_format(self.name, options.format)
        artifact = package.artifact("savedmodel")
        eps = endpoints(artifact)
        if artifact.root is None:
            raise BackendError(f"model {package.key}: the savedmodel artifact has no root folder")
        package.verify(["savedmodel"])
        configure_threads(options.threads)
        memory = RssGrowth()
        model = tf.saved_model.load(str(package.file_path(artifact.root)))
        fns = {}
        for name, ep in eps.items():
            sig = ep.signature or name
            if sig not in model.signatures:
                raise BackendError(f"model {package.key}: no signature {sig!r} "
                                   f"(has: {', '.join(model.signatures) or 'none'})")
            fn = model.signatures[sig]
            fns[name] = tf.function(fn, jit_compile=True) if options.xla else fn
        self.close()
        self._model, self._fns, self._eps = model, fns, eps
        self._style_dim, self._memory = package.style_dim, memory
        memory.update()

    def _call(self, endpoint: str, arrays: dict[str, np.ndarray]) -> np.ndarray:
        if not self._fns:
            raise BackendError("savedmodel backend: no model loaded")
        ep = self._eps[endpoint]
        out = self._fns[endpoint](**{ep.inputs[k]: tf.constant(a) for k, a in arrays.items()})
        if ep.output not in out:
            raise BackendError(f"{endpoint}: signature has no output {ep.output!r} (has: {', '.join(out)})")
        return out[ep.output].numpy()

    def _device_bytes(self) -> int:
        return _gpu_bytes()

    def close(self) -> None:
        self._model, self._fns, self._eps = None, {}, {}
