"""LiteRT (TFLite) backend: XNNPACK on the CPU with explicit threads.

Never imports TensorFlow: an edge install serves with ``ai-edge-litert`` alone.

A LiteRT interpreter is not re-entrant and re-allocating its tensors for a new
input shape costs tens of milliseconds, so the backend keeps ``workers``
independent workers, handed out from a queue (one call at a time each), and
every worker keeps an LRU of interpreters, one per input shape, allocated once.
Files with signatures are called through their signature; signature-less files
(Magenta's) bind tensors by the names the manifest gives.
"""

from __future__ import annotations

import queue
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from stylecast.backends.base import BackendError, BackendOptions, check_format
from stylecast.backends.endpoints import Endpoint, endpoints
from stylecast.backends.fit import STYLE_HW, fit, style_images, stylize_inputs
from stylecast.backends.memory import RssGrowth, release_free_memory
from stylecast.backends.package import ModelPackage

_PREDICT_CACHE = 2  # style batches are rare: interpreters kept per worker for predict_style


@dataclass(frozen=True)
class _Binding:
    """One endpoint of one file: input shape signatures (-1 = dynamic) by contract name."""

    endpoint: Endpoint
    path: Path
    signatures: dict[str, tuple[int, ...]]
    output_size: int  # values per batch item in the output (checked against style_dim)

    @property
    def fixed_batch(self) -> bool:
        """The file takes one item per call: a batch runs as N calls."""
        return all(s[0] == 1 for s in self.signatures.values())

    @property
    def fixed_hw(self) -> tuple[int, int] | None:
        if self.endpoint.fixed_hw is not None:
            return self.endpoint.fixed_hw
        h, w = self.signatures["content"][1:3]
        return (h, w) if h > 0 and w > 0 else None

    def feeds(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Contract inputs → model inputs, each reshaped to the rank the file declares."""
        out = {}
        for key, arr in arrays.items():
            sig = self.signatures[key]
            shape = (arr.shape[0], *arr.shape[1:]) if len(sig) == arr.ndim else (arr.shape[0], *sig[1:])
            out[self.endpoint.inputs[key]] = arr.reshape(shape)
        return out


def _details(it: Interpreter, ep: Endpoint) -> tuple[dict[str, dict], dict[str, dict]]:
    if ep.signature:
        if ep.signature not in it.get_signature_list():
            raise BackendError(f"{ep.name}: the file has no signature {ep.signature!r} "
                               f"(has: {', '.join(it.get_signature_list()) or 'none'})")
        runner = it.get_signature_runner(ep.signature)
        return runner.get_input_details(), runner.get_output_details()
    return ({d["name"]: d for d in it.get_input_details()}, {d["name"]: d for d in it.get_output_details()})


def _bind(ep: Endpoint, path: Path) -> _Binding:
    inputs, outputs = _details(Interpreter(model_path=str(path)), ep)
    missing = [n for n in ep.inputs.values() if n not in inputs]
    if missing or ep.output not in outputs:
        raise BackendError(f"{ep.name}: {path.name} has no tensor {(missing or [ep.output])[0]!r} "
                           f"(inputs: {', '.join(inputs)}; outputs: {', '.join(outputs)})")
    sigs = {k: tuple(int(v) for v in inputs[name]["shape_signature"]) for k, name in ep.inputs.items()}
    out_sig = [int(v) for v in outputs[ep.output]["shape_signature"]]
    return _Binding(ep, path, sigs, int(np.prod(out_sig[1:])) if all(v > 0 for v in out_sig[1:]) else -1)


class _Program:
    """One interpreter for one endpoint and one set of input shapes, allocated on first run."""

    def __init__(self, binding: _Binding, threads: int):
        self._it = Interpreter(model_path=str(binding.path), num_threads=threads)
        self._output = binding.endpoint.output
        if binding.endpoint.signature:
            self._runner = self._it.get_signature_runner(binding.endpoint.signature)
        else:
            self._runner = None
            self._in = {d["name"]: d for d in self._it.get_input_details()}
            self._out = next(d["index"] for d in self._it.get_output_details() if d["name"] == self._output)
            self._allocated = False

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        if self._runner is not None:
            # Resizes and allocates on the first call only: later calls see the same shapes.
            return self._runner(**feeds)[self._output]
        if not self._allocated:
            for name, arr in feeds.items():
                if tuple(self._in[name]["shape"]) != arr.shape:
                    self._it.resize_tensor_input(self._in[name]["index"], arr.shape, strict=True)
            self._it.allocate_tensors()
            self._allocated = True
        for name, arr in feeds.items():
            self._it.set_tensor(self._in[name]["index"], arr)
        self._it.invoke()
        return self._it.get_tensor(self._out)


class _Worker:
    """Interpreters of one worker, LRU-cached per endpoint by input shapes.

    An interpreter unused for ``idle_s`` seconds is dropped at the worker's next call (its
    tensor arena and XNNPACK workspace, tens of MB at 512², go back to the system), so a
    burst of odd frame sizes does not stay resident."""

    def __init__(self, bindings: dict[str, _Binding], threads: int, shape_cache: int, idle_s: float):
        self._bindings, self._threads, self._idle_s = bindings, threads, idle_s
        self._capacity = {"predict_style": _PREDICT_CACHE, "stylize": max(1, shape_cache)}
        self._cache: dict[str, OrderedDict[tuple, tuple[_Program, float]]] = {k: OrderedDict() for k in bindings}

    def run(self, endpoint: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        cache = self._cache[endpoint]
        key = tuple(a.shape for a in feeds.values())
        now = time.monotonic()
        program = cache.pop(key, (None, 0.0))[0] or _Program(self._bindings[endpoint], self._threads)
        cache[key] = (program, now)
        while len(cache) > self._capacity[endpoint]:
            cache.popitem(last=False)
        if self._idle_s > 0:
            self._expire(now - self._idle_s)
        return program.run(feeds)

    def _expire(self, before: float) -> None:
        """Drop interpreters last used before ``before`` (monotonic seconds); LRU order means
        only the front of each cache needs looking at."""
        dropped = False
        for cache in self._cache.values():
            while cache and next(iter(cache.values()))[1] < before:
                cache.popitem(last=False)
                dropped = True
        if dropped:
            release_free_memory()

    def call(self, endpoint: str, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """Run a batch (as N single calls when the file takes one item at a time)."""
        binding = self._bindings[endpoint]
        n = next(iter(arrays.values())).shape[0]
        if binding.fixed_batch and n > 1:
            return np.concatenate([self.call(endpoint, {k: a[i:i + 1] for k, a in arrays.items()})
                                   for i in range(n)])
        return self.run(endpoint, binding.feeds(arrays))


class LiteRTBackend:
    """The Backend protocol on LiteRT with XNNPACK (formats ``tflite-fp32|fp16|int8``)."""

    name = "litert"

    def __init__(self) -> None:
        self._pool: queue.SimpleQueue[_Worker] | None = None
        self._workers: list[_Worker] = []
        self._bindings: dict[str, _Binding] = {}
        self._style_dim = 0
        self._memory: RssGrowth | None = None

    def load(self, package: ModelPackage, options: BackendOptions) -> None:
        """Verify the ``options.format`` artifact's chunks, then open ``options.workers`` workers."""
        check_format(self.name, options.format)
        if options.threads < 1 or options.workers < 1:
            raise BackendError(f"threads and workers must be >= 1 (got {options.threads}, {options.workers})")
        artifact = package.artifact(options.format)
        eps = endpoints(artifact)
        package.verify([options.format])
        memory = RssGrowth()
        bindings = {name: _bind(ep, package.file_path(ep.file or "")) for name, ep in eps.items()}
        predict, stylize = bindings["predict_style"], bindings["stylize"]
        if predict.signatures["image"][1:3] not in ((-1, -1), STYLE_HW):
            raise BackendError(f"predict_style takes {predict.signatures['image']}, the contract needs 256×256 images")
        for b, key in ((predict, None), (stylize, "style")):
            size = b.output_size if key is None else int(np.prod(b.signatures[key][1:]))
            if size not in (package.style_dim, -1):
                raise BackendError(f"{b.endpoint.name}: style vectors of {size} values in the file, "
                                   f"manifest says style_dim {package.style_dim}")
        self.close()
        self._bindings, self._style_dim, self._memory = bindings, package.style_dim, memory
        self._workers = [_Worker(bindings, options.threads, options.shape_cache, options.idle_s)
                         for _ in range(options.workers)]
        self._pool = queue.SimpleQueue()
        for w in self._workers:
            self._pool.put(w)
        memory.update()

    def _loaded(self) -> queue.SimpleQueue[_Worker]:
        if self._pool is None:
            raise BackendError("litert backend: no model loaded")
        return self._pool

    @contextmanager
    def _worker(self) -> Iterator[_Worker]:
        pool = self._loaded()
        worker = pool.get()
        try:
            yield worker
        finally:
            pool.put(worker)

    def warmup(self, shapes: Sequence[tuple[int, int]]) -> None:
        """Run the style predictor once and one stylize per (H, W) on every worker."""
        pool = self._loaded()
        taken = [pool.get() for _ in self._workers]
        try:
            for w in taken:
                w.call("predict_style", {"image": np.full((1, *STYLE_HW, 3), 0.5, np.float32)})
                for h, wd in shapes:
                    x, _ = fit(np.full((1, h, wd, 3), 0.5, np.float32), self._bindings["stylize"].fixed_hw)
                    w.call("stylize", {"content": x, "style": np.zeros((1, self._style_dim), np.float32)})
        finally:
            for w in taken:
                pool.put(w)
        if self._memory:
            self._memory.update()

    @property
    def fixed_hw(self) -> tuple[int, int] | None:
        """(height, width) in pixels the loaded stylize file is baked to (contents are scaled to it
        and back), or None when it runs at the content's own size (or nothing is loaded)."""
        return self._bindings["stylize"].fixed_hw if "stylize" in self._bindings else None

    def predict_style(self, images: np.ndarray) -> np.ndarray:
        images = style_images(images)
        with self._worker() as w:
            out = w.call("predict_style", {"image": images})
        return out.reshape(images.shape[0], self._style_dim)

    def stylize(self, content: np.ndarray, styles: np.ndarray) -> np.ndarray:
        self._loaded()
        content, styles = stylize_inputs(content, styles, self._style_dim)
        x, restore = fit(content, self._bindings["stylize"].fixed_hw)
        with self._worker() as w:
            out = w.call("stylize", {"content": x, "style": styles})
        return restore(out)

    def memory_bytes(self) -> dict[str, int]:
        """Host: RSS growth measured over load and warmup (an estimate); no device memory."""
        return {"host": self._memory.bytes if self._memory else 0, "device": 0}

    def close(self) -> None:
        self._pool, self._workers, self._bindings = None, [], {}
