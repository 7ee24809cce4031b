"""ONNX Runtime on an NVIDIA GPU through the CUDA provider (CPU for the ops it leaves).

Loads the ``onnx`` artifact.  cuDNN picks each convolution's algorithm per input shape
(``BackendOptions.cudnn_conv_algo_search``: ``EXHAUSTIVE`` times every algorithm once per
shape, which warmup pays; ``HEURISTIC`` guesses; ``DEFAULT`` takes the first).  Calls go
through I/O binding: the inputs are copied to the GPU once, the output stays there until
one copy back, with no staging copies in between.  Needs ``onnxruntime-gpu`` built for the
installed CUDA major version (PyPI's 1.31: CUDA 13, cuDNN 9) and an NVIDIA GPU.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

import numpy as np
import onnxruntime as ort

from stylecast.backends import nvidia
from stylecast.backends.base import CONV_ALGO_SEARCH, BackendError, BackendOptions, BackendUnavailable
from stylecast.backends.onnx import OnnxBackend, Provider
from stylecast.backends.package import ModelPackage

log = logging.getLogger(__name__)


@functools.cache
def preload_cuda_libraries() -> None:
    """Load CUDA and cuDNN from the ``nvidia-*`` wheels where they are installed
    (``onnxruntime-gpu[cuda,cudnn]``, ≥ 1.21); libraries on the system path need nothing."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        try:
            preload()
        except Exception as exc:  # noqa: BLE001 - ORT's own untyped errors; the session says what is missing
            log.warning("onnxruntime.preload_dlls: %s", exc)


def gpu_problem(provider: str) -> str:
    """Why ONNX Runtime cannot run ``provider`` on a GPU here, or "" when it can."""
    available = ort.get_available_providers()
    if provider not in available:
        return (f"ONNX Runtime {ort.__version__} here has no {provider} (it has {', '.join(available)}): "
                "install onnxruntime-gpu in place of onnxruntime (pip install 'stylecast[gpu]')")
    return nvidia.cuda().problem


def cuda_problem() -> str:
    """Why ORT-CUDA cannot run here, or "" when it can."""
    return gpu_problem("CUDAExecutionProvider")


class CudaBackend(OnnxBackend):
    """The Backend protocol on ONNX Runtime's CUDA provider, with I/O binding (format ``onnx``)."""

    name = "cuda"
    provider = "CUDAExecutionProvider"

    def __init__(self) -> None:
        super().__init__()
        self._device = 0
        self._gpu_memory: nvidia.GpuMemoryGrowth | None = None

    def cuda_options(self, options: BackendOptions) -> dict[str, object]:
        if options.cudnn_conv_algo_search not in CONV_ALGO_SEARCH:
            raise BackendError(f"cudnn_conv_algo_search {options.cudnn_conv_algo_search!r}: "
                               f"choose one of {', '.join(CONV_ALGO_SEARCH)}")
        return {"device_id": options.device_id, "cudnn_conv_algo_search": options.cudnn_conv_algo_search,
                "do_copy_in_default_stream": True}

    def providers(self, options: BackendOptions) -> list[Provider]:
        problem = gpu_problem(self.provider)
        if problem:
            raise BackendUnavailable(f"the {self.name} backend cannot run here: {problem}")
        try:
            nvidia.gpu(options.device_id)
        except LookupError as exc:
            raise BackendUnavailable(f"the {self.name} backend cannot run here: {exc}") from None
        preload_cuda_libraries()
        return [("CUDAExecutionProvider", self.cuda_options(options)), "CPUExecutionProvider"]

    def check_session(self, session: ort.InferenceSession) -> None:
        if session.get_providers()[0] != self.provider:
            raise BackendUnavailable(f"ONNX Runtime could not start {self.provider} (it fell back to "
                                     f"{', '.join(session.get_providers())}); its log above says why")

    def load(self, package: ModelPackage, options: BackendOptions) -> None:
        """As :meth:`OnnxBackend.load`, on GPU ``options.device_id``; GPU memory is measured from here."""
        memory = nvidia.GpuMemoryGrowth(options.device_id)
        super().load(package, options)
        self._device, self._gpu_memory = options.device_id, memory
        memory.update()

    def warmup(self, shapes: Sequence[tuple[int, int]]) -> None:
        super().warmup(shapes)
        if self._gpu_memory:
            self._gpu_memory.update()

    def _call(self, endpoint: str, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """One copy to the GPU per input, one copy of the output back."""
        if not self._sessions:
            raise BackendError(f"{self.name} backend: no model loaded")
        ep, session = self._eps[endpoint], self._sessions[endpoint]
        binding = session.io_binding()
        for key, array in arrays.items():
            binding.bind_cpu_input(ep.inputs[key], array)
        binding.bind_output(ep.output, "cuda", self._device)
        session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def _device_bytes(self) -> int:
        return self._gpu_memory.bytes if self._gpu_memory else 0
