"""TensorRT through ONNX Runtime's TensorRT provider (CUDA, then CPU, for what it leaves).

Loads the ``onnx`` artifact.  TensorRT builds an engine per input shape on first
use (slow: seconds); engines are cached on disk under
``BackendOptions.engine_cache_dir`` (default ``~/.cache/stylecast/trt``) so a
restart reuses them.  Needs ``onnxruntime-gpu`` with TensorRT libraries and a GPU.
(TF-TRT is not offered: it exists only in TensorFlow <= 2.17 builds.)
"""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from stylecast.backends.base import BackendError, BackendOptions, BackendUnavailable
from stylecast.backends.onnx import OnnxBackend, Provider

DEFAULT_ENGINE_CACHE = Path("~/.cache/stylecast/trt")


class TensorRTBackend(OnnxBackend):
    """The Backend protocol on ONNX Runtime's TensorRT provider (format ``onnx``)."""

    name = "tensorrt"

    def providers(self, options: BackendOptions) -> list[Provider]:
        available = ort.get_available_providers()
        if "TensorrtExecutionProvider" not in available:
            raise BackendUnavailable("the tensorrt backend needs onnxruntime-gpu built with TensorRT and a GPU "
                                     f"(available providers: {', '.join(available)})")
        cache = Path(options.engine_cache_dir or DEFAULT_ENGINE_CACHE).expanduser()
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BackendError(f"tensorrt engine cache {cache}: {exc}") from exc
        trt = {"device_id": options.device_id, "trt_engine_cache_enable": True,
               "trt_engine_cache_path": str(cache), "trt_timing_cache_enable": True,
               "trt_timing_cache_path": str(cache), "trt_fp16_enable": True}
        providers: list[Provider] = [("TensorrtExecutionProvider", trt)]
        if "CUDAExecutionProvider" in available:
            providers.append(("CUDAExecutionProvider", {"device_id": options.device_id}))
        return [*providers, "CPUExecutionProvider"]
