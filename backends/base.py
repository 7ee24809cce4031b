"""The Backend protocol every inference engine implements, and the lazy registry.

Backends are synchronous and know nothing of gRPC or protobuf.  The registry maps
names to import paths (so that choosing ``litert`` never imports TensorFlow) and to
the artifact formats each loads: the one backend → formats table.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from stylecast.backends.package import ModelPackage

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


@dataclass(frozen=True)
class BackendEntry:
    """Where a backend lives and what it loads: the one table of backend → artifact formats."""

    module: str
    cls: str
    requires: str                 # the import that proves the runtime is installed
    formats: tuple[str, ...]      # artifact formats it loads, best first


_REGISTRY: dict[str, BackendEntry] = {
    "litert": BackendEntry("stylecast.backends.litert", "LiteRTBackend", "ai_edge_litert",
                           ("tflite-int8", "tflite-fp16", "tflite-fp32")),
    "savedmodel": BackendEntry("stylecast.backends.savedmodel", "SavedModelBackend", "tensorflow", ("savedmodel",)),
    "onnx": BackendEntry("stylecast.backends.onnx", "OnnxBackend", "onnxruntime", ("onnx",)),
    "onnx-cuda": BackendEntry("stylecast.backends.onnx", "OnnxCudaBackend", "onnxruntime", ("onnx",)),
    "tensorrt": BackendEntry("stylecast.backends.tensorrt", "TensorRTBackend", "onnxruntime", ("onnx",)),
}


def backend_names() -> list[str]:
    return list(_REGISTRY)


def backend_formats(name: str) -> tuple[str, ...]:
    """Artifact formats backend ``name`` loads, best first (``()`` for an unknown name)."""
    entry = _REGISTRY.get(name)
    return entry.formats if entry is not None else ()


def is_installed(name: str) -> bool:
    return importlib.util.find_spec(_REGISTRY[name].requires) is not None


def create_backend(name: str) -> Backend:
    """Instantiate a backend by name, importing its module only now."""
    try:
        entry = _REGISTRY[name]
    except KeyError:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(_REGISTRY)}") from None
    if not is_installed(name):
        raise BackendUnavailable(f"backend {name!r} needs the {entry.requires!r} package")
    return getattr(importlib.import_module(entry.module), entry.cls)()


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
