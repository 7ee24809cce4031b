"""What an NVIDIA machine offers, read from the driver's own libraries through ctypes.

No framework is imported: the CUDA driver (``libcuda.so.1``) says which GPUs there are,
NVML (``libnvidia-ml.so.1``) how much of their memory is in use, and TensorRT
(``libnvinfer.so.10`` / ``.so.8``) which version is installed.  Every reader returns
"nothing" plus a reason on a machine without them, so the GPU backends can refuse
with a message that says exactly what is missing.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

_CU_CC_MAJOR, _CU_CC_MINOR = 75, 76  # CUdevice_attribute
TENSORRT_SONAMES = ("libnvinfer.so.10", "libnvinfer.so.8")


@dataclass(frozen=True)
class Gpu:
    index: int                      # CUDA device ordinal (after CUDA_VISIBLE_DEVICES)
    name: str                       # e.g. "NVIDIA H200"
    compute_capability: tuple[int, int]
    memory_bytes: int               # total device memory
    pci_bus_id: str                 # e.g. "0000:17:00.0"

    @property
    def arch(self) -> str:
        """``sm_90`` for compute capability 9.0."""
        return f"sm_{self.compute_capability[0]}{self.compute_capability[1]}"


@dataclass(frozen=True)
class Cuda:
    gpus: tuple[Gpu, ...]
    driver_version: str             # CUDA version the driver supports, e.g. "13.0"; "" without a driver
    problem: str                    # why there is no usable GPU; "" when there is one


def _cdll(name: str, mode: int = ctypes.DEFAULT_MODE) -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(name, mode=mode)
    except OSError:
        return None


@functools.cache
def cuda() -> Cuda:
    """The GPUs the CUDA driver sees (cached for the process)."""
    lib = _cdll("libcuda.so.1")
    if lib is None:
        return Cuda((), "", "no NVIDIA driver: libcuda.so.1 is not on the library path")
    version = ctypes.c_int()
    driver = ""
    if lib.cuDriverGetVersion(ctypes.byref(version)) == 0:
        driver = f"{version.value // 1000}.{version.value % 1000 // 10}"
    status = lib.cuInit(0)
    if status != 0:
        return Cuda((), driver, f"the CUDA driver found no usable GPU (cuInit error {status})")
    count = ctypes.c_int()
    if lib.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
        return Cuda((), driver, "the CUDA driver sees no GPU (check CUDA_VISIBLE_DEVICES and the device plugin)")
    gpus = []
    for i in range(count.value):
        dev, name, bus = ctypes.c_int(), ctypes.create_string_buffer(256), ctypes.create_string_buffer(32)
        major, minor, total = ctypes.c_int(), ctypes.c_int(), ctypes.c_size_t()
        lib.cuDeviceGet(ctypes.byref(dev), i)
        lib.cuDeviceGetName(name, len(name), dev)
        lib.cuDeviceGetAttribute(ctypes.byref(major), _CU_CC_MAJOR, dev)
        lib.cuDeviceGetAttribute(ctypes.byref(minor), _CU_CC_MINOR, dev)
        lib.cuDeviceTotalMem_v2(ctypes.byref(total), dev)
        lib.cuDeviceGetPCIBusId(bus, len(bus), dev)
        gpus.append(Gpu(i, name.value.decode(errors="replace"), (major.value, minor.value), total.value,
                        bus.value.decode(errors="replace")))
    return Cuda(tuple(gpus), driver, "")


def gpu(device_id: int) -> Gpu:
    """The GPU ``device_id``; :class:`LookupError` saying why when there is none."""
    found = cuda()
    if found.problem:
        raise LookupError(found.problem)
    if not 0 <= device_id < len(found.gpus):
        raise LookupError(f"no GPU {device_id}: the CUDA driver sees {len(found.gpus)}")
    return found.gpus[device_id]


def _version(code: int) -> str:
    """``getInferLibVersion()`` → "10.3.0" (TensorRT 10 encodes M*10000+m*100+p, TensorRT 8 M*1000+m*100+p)."""
    if code >= 100000:
        return f"{code // 10000}.{code // 100 % 100}.{code % 100}"
    return f"{code // 1000}.{code // 100 % 10}.{code % 100}"


def _wheel_libraries() -> list[Path]:
    """libnvinfer files of the ``tensorrt-cu*-libs`` wheels (folder ``tensorrt_libs``), if installed."""
    spec = importlib.util.find_spec("tensorrt_libs")
    folders = list(spec.submodule_search_locations or []) if spec else []
    return [p for d in folders for so in TENSORRT_SONAMES for p in [Path(d) / so] if p.is_file()]


@functools.cache
def tensorrt_version() -> tuple[str, str]:
    """(TensorRT version, "") when libnvinfer loads, else ("", why not).

    A library found only inside the ``tensorrt_libs`` wheel is loaded globally (with its
    plugin library), so ONNX Runtime's own ``dlopen`` of the same soname finds it."""
    lib = next(filter(None, (_cdll(so) for so in TENSORRT_SONAMES)), None)
    for path in _wheel_libraries() if lib is None else ():
        lib = _cdll(str(path), ctypes.RTLD_GLOBAL)
        if lib is not None:
            for plugin in sorted(path.parent.glob("libnvinfer_plugin.so.*")):
                _cdll(str(plugin), ctypes.RTLD_GLOBAL)
            break
    if lib is None:
        return "", (f"TensorRT is not installed: none of {', '.join(TENSORRT_SONAMES)} is on the library path "
                    "(pip install tensorrt-cu12-libs or tensorrt-cu13-libs to match onnxruntime-gpu's CUDA, "
                    "or use NVIDIA's TensorRT container)")
    lib.getInferLibVersion.restype = ctypes.c_int
    return _version(lib.getInferLibVersion()), ""


class _NvmlMemory(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


@functools.cache
def _nvml() -> ctypes.CDLL | None:
    lib = _cdll("libnvidia-ml.so.1")
    if lib is None or lib.nvmlInit_v2() != 0:
        return None
    return lib


def memory_used(device_id: int) -> int | None:
    """Bytes in use on GPU ``device_id`` by every process (NVML), or None where NVML is missing."""
    lib = _nvml()
    try:
        bus = gpu(device_id).pci_bus_id.encode()
    except LookupError:
        return None
    handle, info = ctypes.c_void_p(), _NvmlMemory()
    if lib is None or lib.nvmlDeviceGetHandleByPciBusId_v2(bus, ctypes.byref(handle)) != 0 \
            or lib.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(info)) != 0:
        return None
    return int(info.used)


class GpuMemoryGrowth:
    """Device memory in use on one GPU, growth since construction: an estimate of what a
    backend's load and warmup took (other processes on the same GPU inflate it; 0 without NVML)."""

    def __init__(self, device_id: int) -> None:
        self._device = device_id
        self._base = memory_used(device_id)
        self.bytes = 0

    def update(self) -> int:
        now = memory_used(self._device)
        if now is not None and self._base is not None:
            self.bytes = max(self.bytes, now - self._base, 0)
        return self.bytes
