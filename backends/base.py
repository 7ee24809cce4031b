"""The Backend protocol every inference engine implements, and the lazy registry.

Backends are synchronous and know nothing of gRPC or protobuf.  The registry maps
names to import paths so that choosing ``litert`` never imports TensorFlow.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from stylecast.model.package import ModelPackage

PAD_MULTIPLE = 16


class BackendError(Exception):
    """A backend cannot load or run a model."""


class BackendUnavailable(BackendError):
    """The backend's runtime is not installed or has no usable device."""


@dataclass(frozen=True)
class BackendOptions:
    format: str = "tflite-int8"   # which package artifact to load
    threads: int = 2              # intra-op threads per worker
    workers: int = 1              # independent interpreters / sessions
    xla: bool = False             # savedmodel: jit_compile
    device_id: int = 0            # GPU backends
    shape_cache: int = 4          # LiteRT: interpreters kept per worker, one per input shape
    idle_s: float = 10.0          # LiteRT: an interpreter unused this long is dropped (0 = never)
    providers: tuple[str, ...] = ()  # onnx: ONNX Runtime execution providers (default: the backend's own)
    engine_cache_dir: str | None = None  # tensorrt: engine cache folder (default ~/.cache/stylecast/trt)


@runtime_checkable
class Backend(Protocol):
    name: str

    def load(self, package: ModelPackage, options: BackendOptions) -> None: ...

    def warmup(self, shapes: Sequence[tuple[int, int]]) -> None: ...

    def predict_style(self, images: np.ndarray) -> np.ndarray:
        """N×256×256×3 float32 in [0,1] → N×D float32."""

    def stylize(self, content: np.ndarray, styles: np.ndarray) -> np.ndarray:
        """N×H×W×3 float32 in [0,1] and N×D → N×H×W×3 float32 in [0,1], any H, W."""

    def memory_bytes(self) -> dict[str, int]: ...

    def close(self) -> None: ...


# name -> (module, class, the import that proves the runtime is installed)
_REGISTRY: dict[str, tuple[str, str, str]] = {
    "litert": ("stylecast.backends.litert", "LiteRTBackend", "ai_edge_litert"),
    "savedmodel": ("stylecast.backends.savedmodel", "SavedModelBackend", "tensorflow"),
    "onnx": ("stylecast.backends.onnx", "OnnxBackend", "onnxruntime"),
    "onnx-cuda": ("stylecast.backends.onnx", "OnnxCudaBackend", "onnxruntime"),
    "tensorrt": ("stylecast.backends.tensorrt", "TensorRTBackend", "onnxruntime"),
}


def backend_names() -> list[str]:
    return list(_REGISTRY)


def is_installed(name: str) -> bool:
    return importlib.util.find_spec(_REGISTRY[name][2]) is not None


def create_backend(name: str) -> Backend:
    """Instantiate a backend by name, importing its module only now."""
    try:
        module, cls, _ = _REGISTRY[name]
    except KeyError:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(_REGISTRY)}") from None
    if not is_installed(name):
        raise BackendUnavailable(f"backend {name!r} needs the {_REGISTRY[name][2]!r} package")
    return getattr(importlib.import_module(module), cls)()


def best_available() -> str:
    """``--backend auto``: ORT TensorRT on a GPU, else ORT CUDA, else LiteRT (else SavedModel)."""
    if is_installed("onnx") and Path("/dev/nvidiactl").exists():  # GPU providers need a GPU
        import onnxruntime  # noqa: PLC0415 - only when asked, never at import time

        providers = onnxruntime.get_available_providers()
        if "TensorrtExecutionProvider" in providers:
            return "tensorrt"
        if "CUDAExecutionProvider" in providers:
            return "onnx-cuda"
    for name in ("litert", "savedmodel"):
        if is_installed(name):
            return name
    raise BackendUnavailable("no inference runtime installed: pip install 'stylecast[litert]'")


def pad_to_multiple(x: np.ndarray, multiple: int = PAD_MULTIPLE) -> tuple[np.ndarray, int, int]:
    """Edge-pad N×H×W×C so H and W are multiples of ``multiple``; return it and the original H, W."""
    h, w = x.shape[1:3]
    ph, pw = -h % multiple, -w % multiple
    if ph or pw:
        x = np.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    return x, h, w
