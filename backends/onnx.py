"""ONNX Runtime backend on the CPU (the ``cuda`` and ``tensorrt`` backends put other providers first).

The ``onnx`` artifact names, per endpoint, the file and its input/output names;
both endpoints may share one file.  One ``InferenceSession`` per file is safe
to call from several threads, so ``workers`` only matters to the LiteRT backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from stylecast.backends.base import BackendError, BackendOptions, BackendUnavailable, check_format
from stylecast.backends.endpoints import Endpoint, endpoints
from stylecast.backends.memory import RssGrowth
from stylecast.backends.package import ModelPackage
from stylecast.backends.session_backend import SessionBackend

Provider = str | tuple[str, dict[str, Any]]


class OnnxBackend(SessionBackend):
    """The Backend protocol on ONNX Runtime (format ``onnx``)."""

    name = "onnx"
    default_providers: tuple[str, ...] = ("CPUExecutionProvider",)

    def __init__(self) -> None:
        self._sessions: dict[str, ort.InferenceSession] = {}
        self._eps: dict[str, Endpoint] = {}
        self._style_dim = 0
        self._memory: RssGrowth | None = None

    def providers(self, options: BackendOptions) -> list[Provider]:
        """Execution providers, best first (this backend's ``default_providers``); raises
        :class:`BackendUnavailable` when ONNX Runtime here lacks one."""
        wanted: list[Provider] = list(self.default_providers)
        available = set(ort.get_available_providers())
        missing = [p for p in self.default_providers if p not in available]
        if missing:
            raise BackendUnavailable(f"ONNX Runtime lacks {', '.join(missing)} "
                                     f"(available: {', '.join(sorted(available))})")
        return wanted

    def file_providers(self, providers: list[Provider], path: Path, endpoints: list[Endpoint],
                       package: ModelPackage, options: BackendOptions) -> list[Provider]:
        """The providers for the session of one file (holding ``endpoints``): ``providers`` here."""
        return providers

    def check_session(self, session: ort.InferenceSession) -> None:
        """Refuse a session that runs on other providers than asked (ORT falls back silently)."""

    def session_options(self, options: BackendOptions) -> ort.SessionOptions:
        so = ort.SessionOptions()
        so.intra_op_num_threads = options.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return so

    def load(self, package: ModelPackage, options: BackendOptions) -> None:
        """Verify the ``onnx`` artifact's chunks, then open one session per file."""
        check_format(self.name, options.format)
        eps = endpoints(package.artifact("onnx"))
        providers = self.providers(options)
        package.verify(["onnx"])
        memory = RssGrowth()
        so = self.session_options(options)
        sessions: dict[str, ort.InferenceSession] = {}
        for ep in eps.values():
            if ep.file is None:
                raise BackendError(f"model {package.key}: onnx endpoint {ep.name!r} names no file")
            if ep.file not in sessions:
                path = package.file_path(ep.file)
                file_eps = [e for e in eps.values() if e.file == ep.file]
                try:
                    sessions[ep.file] = ort.InferenceSession(str(path), so, providers=self.file_providers(
                        providers, path, file_eps, package, options))
                except BackendError:
                    raise
                except Exception as exc:  # ORT raises its own untyped errors
                    raise BackendError(f"model {package.key}: cannot open {ep.file}: {exc}") from exc
                self.check_session(sessions[ep.file])
            sess = sessions[ep.file]
            names = {i.name for i in sess.get_inputs()}
            outputs = {o.name for o in sess.get_outputs()}
            missing = [n for n in ep.inputs.values() if n not in names]
            if missing or ep.output not in outputs:
                raise BackendError(f"{ep.name}: {ep.file} has no {(missing or [ep.output])[0]!r} "
                                   f"(inputs: {', '.join(sorted(names))}; outputs: {', '.join(sorted(outputs))})")
        self.close()
        self._sessions, self._eps = {ep.name: sessions[ep.file] for ep in eps.values()}, eps
        self._style_dim, self._memory = package.style_dim, memory
        memory.update()

    def _call(self, endpoint: str, arrays: dict[str, np.ndarray]) -> np.ndarray:
        if not self._sessions:
            raise BackendError(f"{self.name} backend: no model loaded")
        ep = self._eps[endpoint]
        return self._sessions[endpoint].run([ep.output], {ep.inputs[k]: a for k, a in arrays.items()})[0]

    def close(self) -> None:
        self._sessions, self._eps = {}, {}

