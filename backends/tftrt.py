"""TF-TRT: the ``savedmodel`` artifact converted by TensorFlow's TensorRT converter.

Each endpoint's signature is converted with ``tf.experimental.tensorrt.Converter``
(``precision`` fp16 by default, dynamic shapes, one "Range" optimisation profile from
the configured frame sizes: :func:`stylecast.backends.engines.content_profile`), its
engines built for the profile's corners and the typical frame, and the converted
SavedModels cached under ``engine_cache_dir`` (default ``~/.cache/stylecast``) in
``tf-trt/NAME-VERSION/HASH``, keyed by the artifact's sha256s, precision, profile,
TensorFlow and TensorRT versions and the GPU: a restart loads them instead of
converting again.  Engines are never built at run time: a frame inside the profile
uses the built engine, a larger one is scaled to fit it, a larger batch runs in slices.

TF-TRT exists only in TensorFlow builds linked against TensorRT: TensorFlow ≤ 2.17
with TensorRT 8.x (PyPI's ``tensorflow[and-cuda]`` 2.15–2.17 with ``tensorrt`` 8.6
wheels; NVIDIA's TensorFlow containers up to 24.xx, see
``deploy/docker/Dockerfile.gpu-tftrt``).  Anywhere else :meth:`TfTrtBackend.load`
raises :class:`BackendUnavailable` saying which part is missing.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from stylecast.backends import nvidia
from stylecast.backends.base import BackendError, BackendOptions, BackendUnavailable, check_format
from stylecast.backends.endpoints import Endpoint, endpoints
from stylecast.backends.engines import EngineCache, Profile, WithinProfile, cache_key, content_profile, input_shapes
from stylecast.backends.memory import RssGrowth
from stylecast.backends.savedmodel import SavedModelBackend, configure_threads
from stylecast.backends.package import ModelPackage

log = logging.getLogger(__name__)

REQUIREMENT = ("TF-TRT needs TensorFlow <= 2.17 built with TensorRT 8.x and an NVIDIA GPU "
               "(e.g. NVIDIA's TensorFlow container: deploy/docker/Dockerfile.gpu-tftrt)")


def _utils():
    try:
        from tensorflow.compiler.tf2tensorrt import _pywrap_py_utils as utils  # noqa: PLC0415 - private, may be absent
    except ImportError:
        return None
    return utils


def tftrt_problem(device_id: int = 0) -> str:
    """Why TF-TRT cannot run here, or "" when it can.

    Never asks TensorFlow for the *loaded* TensorRT version unless TensorRT loaded:
    TensorFlow 2.17 aborts the process when it is asked without the library."""
    utils = _utils()
    linked = tuple(utils.get_linked_tensorrt_version()) if utils is not None else (0, 0, 0)
    if not any(linked):
        return f"TensorFlow {tf.__version__} here is built without TensorRT. {REQUIREMENT}"
    if not utils.is_tensorrt_enabled():
        return (f"TensorFlow {tf.__version__} is built with TensorRT {'.'.join(map(str, linked))}, but "
                f"libnvinfer.so.{linked[0]} does not load: put TensorRT {linked[0]}.x's libraries on the "
                "library path (ldconfig or LD_LIBRARY_PATH)")
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return f"TensorFlow sees no GPU ({nvidia.cuda().problem or 'check CUDA_VISIBLE_DEVICES'})"
    if device_id >= len(gpus):
        return f"no GPU {device_id}: TensorFlow sees {len(gpus)}"
    return ""


def build_inputs(signature, ep: Endpoint, profile: Profile, max_batch: int) -> list[dict[str, np.ndarray]]:
    """Inputs at the profile's min, opt (the typical frame) and max shapes, for ``Converter.build``:
    TF-TRT's "Range" strategy spans the profile from them and builds the engine once."""
    roles = {model_name: role for role, model_name in ep.inputs.items()}
    ranges = {}
    for name, spec in signature.structured_input_signature[1].items():
        dims = [d if d is not None else -1 for d in spec.shape.as_list()]
        ranges[name] = input_shapes(dims, roles.get(name, ""), profile, max_batch) or (tuple(dims),) * 3
    return [{name: np.full(r[k], 0.5, np.float32) for name, r in ranges.items()} for k in range(3)]


def convert(source: Path, target: Path, eps: dict[str, Endpoint], profile: Profile, options: BackendOptions) -> None:
    """Convert every endpoint's signature of the SavedModel at ``source`` into ``target/ENDPOINT``."""
    model = tf.saved_model.load(str(source))
    with tf.device(f"/GPU:{options.device_id}"):
        for name, ep in eps.items():
            signature = ep.signature or name
            converter = tf.experimental.tensorrt.Converter(
                input_saved_model_dir=str(source), input_saved_model_signature_key=signature,
                precision_mode="FP16" if options.precision == "fp16" else "FP32",
                use_dynamic_shape=True, dynamic_shape_profile_strategy="Range",
                maximum_cached_engines=1, allow_build_at_runtime=False)
            converter.convert()
            inputs = build_inputs(model.signatures[signature], ep, profile, options.max_batch)
            converter.build(input_fn=lambda inputs=inputs: iter(inputs))
            converter.save(str(target / name))


class TfTrtBackend(WithinProfile, SavedModelBackend):
    """The Backend protocol on TF-TRT-converted SavedModels (format ``savedmodel``)."""

    name = "tf-trt"

    def __init__(self) -> None:
        super().__init__()
        self.cache: EngineCache | None = None
        self.build_seconds = 0.0   # 0 when the engines came from the cache
        self._device = "/GPU:0"    # where the loaded engines run (BackendOptions.device_id)

    def load(self, package: ModelPackage, options: BackendOptions) -> None:
        """Refuse unless TF-TRT can run; verify the artifact; convert (or take the cached
        conversion); load the converted signatures."""
        check_format(self.name, options.format)
        artifact = package.artifact("savedmodel")
        eps = endpoints(artifact)
        if artifact.root is None:
            raise BackendError(f"model {package.key}: the savedmodel artifact has no root folder")
        problem = tftrt_problem(options.device_id)
        if problem:
            raise BackendUnavailable(f"the tf-trt backend cannot run here: {problem}")
        package.verify(["savedmodel"])
        configure_threads(options.threads)
        for device in tf.config.list_physical_devices("GPU"):
            try:
                tf.config.experimental.set_memory_growth(device, True)  # take GPU memory as used, not all of it
            except RuntimeError:
                pass  # the runtime already started: its setting stays
        memory = RssGrowth()
        profile = content_profile(options.frame_sizes, options.max_batch)
        gpu = nvidia.gpu(options.device_id)
        loaded = _utils().get_loaded_tensorrt_version()   # safe: tftrt_problem found it loaded
        runtime = {"tensorflow": tf.__version__, "tensorrt": ".".join(map(str, loaded)),
                   "gpu": f"{gpu.name} {gpu.arch}"}
        cache = EngineCache(options.engine_cache_dir, "tf-trt",
                            cache_key(package, "savedmodel", options.precision, profile, runtime))
        build_seconds = 0.0
        if not cache.ready():
            log.info("TF-TRT: converting %s for %s (%s), profile %s … %s", package.key, gpu.name,
                     options.precision, profile.min, profile.max)
            started = time.perf_counter()
            cache.publish(lambda scratch: convert(package.file_path(artifact.root), scratch, eps, profile, options))
            build_seconds = time.perf_counter() - started
        device = f"/GPU:{options.device_id}"
        with tf.device(device):  # the engines run on the GPU they were built for
            models = {name: tf.saved_model.load(str(cache.folder / name)) for name in eps}
        fns = {}
        for name, ep in eps.items():
            signature = ep.signature or name
            if signature not in models[name].signatures:
                raise BackendError(f"{cache.folder / name}: no signature {signature!r} after conversion")
            fns[name] = models[name].signatures[signature]
        self.close()
        self._model, self._fns, self._eps = models, fns, eps
        self._style_dim, self._memory, self._profile = package.style_dim, memory, profile
        self.cache, self.build_seconds, self._device = cache, build_seconds, device
        memory.update()

    def _call(self, endpoint: str, arrays: dict[str, np.ndarray]) -> np.ndarray:
        with tf.device(self._device):
            return super()._call(endpoint, arrays)

    def close(self) -> None:
        super().close()
        self._profile = None
