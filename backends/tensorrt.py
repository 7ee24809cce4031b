"""TensorRT through ONNX Runtime's TensorRT provider (CUDA, then CPU, for what it leaves).

Loads the ``onnx`` artifact.  TensorRT builds one engine per file, in ``precision``
(fp16 by default), for one optimisation profile covering every configured frame size
(:func:`stylecast.backends.engines.content_profile`), so a new frame size inside it
never rebuilds mid-stream and a larger one is scaled to fit.  Engines and TensorRT's
timing cache are kept under ``BackendOptions.engine_cache_dir`` (default
``~/.cache/stylecast``) in ``ort-trt/NAME-VERSION/HASH``, keyed by the artifact's sha256s,
precision, profile, ONNX Runtime and TensorRT versions and the GPU, so a restart loads
them in seconds.  Batches larger than ``max_batch`` run in slices.  Needs
``onnxruntime-gpu``, TensorRT's libraries (``libnvinfer.so.10``) and an NVIDIA GPU.
"""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from stylecast.backends import nvidia
from stylecast.backends.base import BackendOptions, BackendUnavailable
from stylecast.backends.cuda import CudaBackend, gpu_problem
from stylecast.backends.endpoints import Endpoint
from stylecast.backends.engines import EngineCache, WithinProfile, cache_key, content_profile, input_shapes
from stylecast.backends.onnx import Provider
from stylecast.backends.package import ModelPackage


def tensorrt_problem() -> str:
    """Why ORT-TensorRT cannot run here, or "" when it can (provider, GPU, TensorRT libraries)."""
    problem = gpu_problem("TensorrtExecutionProvider")
    return problem or nvidia.tensorrt_version()[1]


def profile_option(shapes: dict[str, tuple[int, ...]]) -> str:
    """``{"content": (1, 16, 16, 3)}`` → ``"content:1x16x16x3"`` (ORT's profile-shape syntax)."""
    return ",".join(f"{name}:{'x'.join(map(str, shape))}" for name, shape in shapes.items())


def trt_options(options: BackendOptions, cache: Path, shapes: dict[str, tuple[tuple[int, ...], ...]]) -> dict[str, object]:
    """TensorRT provider options: precision, engine and timing caches in ``cache``, and one
    explicit profile from ``shapes`` (input name → (min, opt, max)) when any input is dynamic."""
    out: dict[str, object] = {
        "device_id": options.device_id, "trt_fp16_enable": options.precision == "fp16",
        "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache)}
    if shapes:
        for i, key in enumerate(("trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes")):
            out[key] = profile_option({name: s[i] for name, s in shapes.items()})
    return out


class TensorRTBackend(WithinProfile, CudaBackend):
    """The Backend protocol on ONNX Runtime's TensorRT provider (format ``onnx``)."""

    name = "tensorrt"
    provider = "TensorrtExecutionProvider"

    def __init__(self) -> None:
        super().__init__()
        self.cache: EngineCache | None = None   # where the engines are (tools report it)

    def providers(self, options: BackendOptions) -> list[Provider]:
        problem = tensorrt_problem()
        if problem:
            raise BackendUnavailable(f"the tensorrt backend cannot run here: {problem}")
        return super().providers(options)   # checks the GPU; CUDA then CPU after TensorRT

    def file_providers(self, providers: list[Provider], path: Path, endpoints: list[Endpoint],
                       package: ModelPackage, options: BackendOptions) -> list[Provider]:
        """TensorRT first, with the profile shapes of this file's dynamic inputs."""
        assert self.cache is not None, "load() sets the cache before opening sessions"
        profile = content_profile(options.frame_sizes, options.max_batch)
        roles = {model_name: role for ep in endpoints for role, model_name in ep.inputs.items()}
        plain = ort.SessionOptions()
        plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL   # only to read the inputs
        meta = ort.InferenceSession(str(path), plain, providers=["CPUExecutionProvider"])
        shapes = {}
        for inp in meta.get_inputs():
            found = input_shapes(inp.shape, roles.get(inp.name, ""), profile, options.max_batch)
            if found is not None:
                shapes[inp.name] = found
        return [("TensorrtExecutionProvider", trt_options(options, self.cache.folder, shapes)), *providers]

    def load(self, package: ModelPackage, options: BackendOptions) -> None:
        """As :meth:`CudaBackend.load`; engines come from the cache, else TensorRT builds them
        (on the first run of each file: warmup pays it)."""
        self.providers(options)   # refuse before any work
        profile = content_profile(options.frame_sizes, options.max_batch)
        gpu = nvidia.gpu(options.device_id)
        runtime = {"onnxruntime": ort.__version__, "tensorrt": nvidia.tensorrt_version()[0],
                   "gpu": f"{gpu.name} {gpu.arch}"}
        self.cache = EngineCache(options.engine_cache_dir, "ort-trt",
                                 cache_key(package, "onnx", options.precision, profile, runtime))
        self.cache.prepare()
        super().load(package, options)
        self._profile = profile

    def close(self) -> None:
        super().close()
        self._profile = None

