"""The Backend protocol every inference engine implements, and the lazy registry.

Backends are synchronous and know nothing of gRPC or protobuf.  The registry maps
names to import paths (so that choosing ``litert`` never imports TensorFlow) and to
the artifact formats each loads: the one backend → formats table.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from stylecast.backends.package import FORMATS, ModelPackage

log = logging.getLogger(__name__)
PAD_MULTIPLE = 16
# cuDNN's convolution algorithm search (ONNX Runtime's CUDA provider option ``cudnn_conv_algo_search``)
CONV_ALGO_SEARCH = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")


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
    device_id: int = 0            # cuda, tensorrt, tf-trt: which GPU (CUDA's numbering)
    shape_cache: int = 4          # LiteRT: interpreters kept per worker, one per input shape
    idle_s: float = 10.0          # LiteRT: an interpreter unused this long is dropped (0 = never)
    engine_cache_dir: str | None = None  # tensorrt, tf-trt: engine cache root (default ~/.cache/stylecast)
    precision: str = "fp16"       # tensorrt, tf-trt: fp16 | fp32
    max_batch: int = 1            # tensorrt, tf-trt: the largest batch the engines take
    # tensorrt, tf-trt: frame sizes (H, W) the engines cover, the first the typical one
    frame_sizes: tuple[tuple[int, int], ...] = ((512, 512),)
    cudnn_conv_algo_search: str = "EXHAUSTIVE"  # cuda, tensorrt: one of CONV_ALGO_SEARCH


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
    probe: str = ""               # GPU backends: the function in ``module`` saying why it cannot run here


_REGISTRY: dict[str, BackendEntry] = {
    "litert": BackendEntry("stylecast.backends.litert", "LiteRTBackend", "ai_edge_litert",
                           ("tflite-int8", "tflite-fp16", "tflite-fp32")),
    "savedmodel": BackendEntry("stylecast.backends.savedmodel", "SavedModelBackend", "tensorflow", ("savedmodel",)),
    "onnx": BackendEntry("stylecast.backends.onnx", "OnnxBackend", "onnxruntime", ("onnx",)),
    "cuda": BackendEntry("stylecast.backends.cuda", "CudaBackend", "onnxruntime", ("onnx",), "cuda_problem"),
    "tensorrt": BackendEntry("stylecast.backends.tensorrt", "TensorRTBackend", "onnxruntime", ("onnx",),
                             "tensorrt_problem"),
    "tf-trt": BackendEntry("stylecast.backends.tftrt", "TfTrtBackend", "tensorflow", ("savedmodel",),
                           "tftrt_problem"),
}
# ``--backend auto`` tries these in order (on a CPU, ONNX Runtime loses to LiteRT/XNNPACK).
AUTO_ORDER = ("tensorrt", "cuda", "tf-trt", "litert", "savedmodel", "onnx")


def backend_names() -> list[str]:
    return list(_REGISTRY)


def backend_formats(name: str) -> tuple[str, ...]:
    """Artifact formats backend ``name`` loads, best first (``()`` for an unknown name)."""
    entry = _REGISTRY.get(name)
    return entry.formats if entry is not None else ()


def check_format(name: str, fmt: str) -> None:
    """Raise :class:`BackendError` unless backend ``name`` loads artifact format ``fmt`` (per the table)."""
    formats = backend_formats(name)
    if fmt in formats:
        return
    if len(formats) == 1:
        raise BackendError(f"the {name} backend serves the {formats[0]!r} format, not {fmt!r}")
    serves = [f for f in FORMATS if f in formats]
    raise BackendError(f"the {name} backend serves {', '.join(serves)}, not {fmt!r}")


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


def unavailable(name: str) -> str:
    """Why backend ``name`` cannot run here, or "" when it can: its package; then, for a GPU
    backend, a GPU the driver sees (read without importing any framework) and its own probe."""
    entry = _REGISTRY[name]
    if not is_installed(name):
        return f"the {entry.requires!r} package is not installed"
    if not entry.probe:
        return ""
    from stylecast.backends import nvidia  # noqa: PLC0415 - only when asked

    return nvidia.cuda().problem or getattr(importlib.import_module(entry.module), entry.probe)()


def auto_choice(formats: Collection[str] = ()) -> tuple[str, list[str]]:
    """The first backend of :data:`AUTO_ORDER` that can run here and loads one of ``formats``
    (any when empty), "" when none can, and why each backend before it was passed over."""
    passed: list[str] = []
    for name in AUTO_ORDER:
        why = unavailable(name)
        if not why and formats and not set(_REGISTRY[name].formats) & set(formats):
            why = f"the model has no {' / '.join(_REGISTRY[name].formats)} artifact"
        if not why:
            return name, passed
        passed.append(f"{name}: {why}")
    return "", passed


def best_available(formats: Collection[str] = ()) -> str:
    """``--backend auto``: :func:`auto_choice`.  Logs the choice with why each backend before it
    was passed over; :class:`BackendUnavailable` with every reason when none can."""
    name, passed = auto_choice(formats)
    if not name:
        raise BackendUnavailable("no backend can run here: " + "; ".join(passed))
    log.info("backend auto: %s%s", name, "".join(f"; not {p}" for p in passed))
    return name


def pad_to_multiple(x: np.ndarray, multiple: int = PAD_MULTIPLE) -> tuple[np.ndarray, int, int]:
    """Edge-pad N×H×W×C so H and W are multiples of ``multiple``; return it and the original H, W."""
    h, w = x.shape[1:3]
    ph, pw = -h % multiple, -w % multiple
    if ph or pw:
        x = np.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    return x, h, w
