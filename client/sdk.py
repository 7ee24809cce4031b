"""``Client``: the blocking SDK, a thin facade that runs :class:`AsyncClient` on a private
event loop thread.  Every method delegates; no request logic lives here."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from stylecast.client.aio import _DEFAULT, MAX_IN_FLIGHT, AsyncClient
from stylecast.client.channel import DEFAULT_TARGET, MAX_MESSAGE_BYTES, TLS, PemSource, tls_settings
from stylecast.client.messages import ImageLike, StyleSpec
from stylecast.client.types import (BackendInfo, FrameResult, Limits, ModelInfo, Output, Style, StyleMatch,
                                    UploadInfo, VersionTraffic)

T = TypeVar("T")


class Client:
    """Blocking stylecast client; same arguments and methods as :class:`AsyncClient`.

    Safe to share between threads.  Use as a context manager or call :meth:`close`.
    """

    def __init__(self, target: str = DEFAULT_TARGET, *, tls: TLS | bool | None = None, token: str | None = None,
                 ca: PemSource | None = None, cert: PemSource | None = None, key: PemSource | None = None,
                 metadata: Sequence[tuple[str, str]] = (), timeout: float | None = 60.0,
                 max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        tls_settings(tls, ca, cert, key)  # argument errors raise here, before a thread starts
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="stylecast-client", daemon=True)
        self._thread.start()

        async def make() -> AsyncClient:  # the aio channel must be created on its own loop
            return AsyncClient(target, tls=tls, token=token, ca=ca, cert=cert, key=key, metadata=metadata,
                               timeout=timeout, max_message_bytes=max_message_bytes)

        self._async = self._run(make())
        self.target = target

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop.is_closed():
            coro.close()
            raise RuntimeError("this Client is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _iterate(self, agen: AsyncIterator[T]) -> Iterator[T]:
        try:
            while True:
                try:
                    yield self._run(agen.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            if self._loop.is_running():
                self._run(agen.aclose())  # type: ignore[attr-defined]

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self._loop.is_running():
            return
        self._run(self._async.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def wait_ready(self, timeout: float = 10.0) -> None:
        self._run(self._async.wait_ready(timeout))

    def limits(self) -> Limits | None:
        return self._run(self._async.limits())

    def register_style(self, source: ImageLike, name: str = "") -> Style:
        return self._run(self._async.register_style(source, name))

    def get_style(self, style_id: str, *, thumbnail: bool = False) -> Style:
        return self._run(self._async.get_style(style_id, thumbnail=thumbnail))

    def list_styles(self, page_size: int = 100) -> Iterator[Style]:
        return self._iterate(self._async.list_styles(page_size))

    def delete_style(self, style_id: str) -> bool:
        return self._run(self._async.delete_style(style_id))

    def search_styles(self, style: str | Style | None = None, *, image: ImageLike | None = None,
                      limit: int = 10, model: str = "") -> list[StyleMatch]:
        return self._run(self._async.search_styles(style, image=image, limit=limit, model=model))

    def upload_model(self, package_dir: str | os.PathLike, *, progress: Callable[[int, int], None] | None = None,
                     timeout: float | None = None) -> UploadInfo:
        """Resumable chunked upload; ``progress`` is called from the client's loop thread."""
        return self._run(self._async.upload_model(package_dir, progress=progress, timeout=timeout))

    def list_models(self, name: str = "") -> list[ModelInfo]:
        return self._run(self._async.list_models(name))

    def load_model(self, name: str = "", version: str = "", *, load_order: Sequence[str] = (),
                   timeout: float | None = _DEFAULT) -> ModelInfo:
        return self._run(self._async.load_model(name, version, load_order=load_order, timeout=timeout))

    def unload_model(self, name: str, version: str, *, delete_files: bool = False) -> tuple[bool, bool]:
        return self._run(self._async.unload_model(name, version, delete_files=delete_files))

    def set_traffic_split(self, weights: Mapping[str, int], model: str = "",
                          timeout: float | None = _DEFAULT) -> list[VersionTraffic]:
        return self._run(self._async.set_traffic_split(weights, model, timeout))

    def traffic_split(self, model: str = "") -> list[VersionTraffic]:
        return self._run(self._async.traffic_split(model))

    def watch_model(self, name: str = "", version: str = "", timeout: float | None = None) -> Iterator[ModelInfo]:
        return self._iterate(self._async.watch_model(name, version, timeout))

    def list_backends(self) -> list[BackendInfo]:
        return self._run(self._async.list_backends())

    def stylize(self, image: ImageLike, style: StyleSpec, *, strength: float | None = None,
                output: Output | str | None = None, process_max_side: int = 0, model: str = "",
                timeout: float | None = _DEFAULT, model_version: str = "") -> FrameResult:
        return self._run(self._async.stylize(image, style, strength=strength, output=output,
                                             process_max_side=process_max_side, model=model, timeout=timeout,
                                             model_version=model_version))

    def stream(self, frames: Iterable[Any], style: StyleSpec, *, strength: float | None = None,
               output: Output | str | None = None, mode: str = "every_frame", process_max_side: int = 0,
               model: str = "", timeout: float | None = None,
               max_in_flight: int | None = MAX_IN_FLIGHT, failover: bool = True,
               model_version: str = "") -> Iterator[FrameResult]:
        """Results in send order; ``frames`` is consumed on a worker thread as the server asks for more
        (at most ``max_in_flight`` frames unanswered).  ``failover``: continue on another replica when
        this one drains or dies (see :meth:`AsyncClient.stream`)."""
        return self._iterate(self._async.stream(frames, style, strength=strength, output=output, mode=mode,
                                                process_max_side=process_max_side, model=model, timeout=timeout,
                                                max_in_flight=max_in_flight, failover=failover,
                                                model_version=model_version))

