"""``AsyncClient``: the one implementation of the SDK, on grpc.aio.

``Client`` (``sdk.py``) runs this same code on a private event loop; nothing
here is duplicated there.
"""

from __future__ import annotations

import asyncio
import numbers
import os
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc

from stylecast.client.channel import DEFAULT_TARGET, MAX_MESSAGE_BYTES, TLS, PemSource, aio_channel, tls_settings
from stylecast.client.errors import (DeadlineExceeded, ResourceExhausted, StylecastError, Unavailable, error_for,
                                     from_rpc_error)
from stylecast.client.failover import FailoverStream
from stylecast.client.messages import (ImageLike, StreamOptions, StyleSpec, check_image, encoded_bytes,
                                       parse_backend, parse_frame, parse_matches, parse_model, parse_style,
                                       parse_traffic, parse_upload, read_chunk, search_request,
                                       to_config, to_image, upload_messages)
from stylecast.client.types import (BackendInfo, FrameResult, Limits, ModelInfo, Output, Style, StyleMatch,
                                    Unloaded, UploadInfo, VersionTraffic)
from stylecast.v1 import model_admin_pb2 as apb
from stylecast.v1 import model_admin_pb2_grpc as apb_grpc
from stylecast.v1 import stylecast_pb2 as pb
from stylecast.v1 import stylecast_pb2_grpc as pb_grpc

T = TypeVar("T")
MAX_IN_FLIGHT = 16  # default bound on a stream's sent-and-unanswered frames
_END = object()
_DEFAULT: Any = object()  # "use the client's default timeout"
_UNASKED: Any = object()
# What grpcio reports for a streaming call that passes its deadline with a write in flight
# ("Internal error from Core") instead of DEADLINE_EXCEEDED.
_DEADLINE_MASKS = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.CANCELLED)


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _past_deadline(error: StylecastError, deadline: float | None, timeout: float | None) -> StylecastError:
    """A streaming call's typed error, as DEADLINE_EXCEEDED when its deadline has passed,
    whatever grpcio reported instead."""
    if deadline is not None and error.code in _DEADLINE_MASKS and time.monotonic() >= deadline:
        return DeadlineExceeded(f"the call passed its {timeout:g} s deadline "
                                f"(grpc reported {error.code.name}: {error.details})")
    return error


async def _aiter(items: Iterable[T] | AsyncIterable[T]) -> AsyncIterator[T]:
    """Iterate sync or async iterables; a sync iterator that is not a plain sequence is pulled
    in an executor thread, so a slow producer (a video decoder) never blocks the event loop."""
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    elif isinstance(items, Sequence):
        for item in items:
            yield item
    else:
        loop = asyncio.get_running_loop()
        it = iter(items)
        while (item := await loop.run_in_executor(None, next, it, _END)) is not _END:
            yield item


class AsyncClient:
    """Asynchronous stylecast client.

    ``tls``: ``True`` (system roots) or a :class:`TLS`; ``ca``: a PEM path (or bytes) of the CA that
    signed the server's certificate (implies TLS); ``cert`` + ``key``: a client certificate (mTLS);
    ``token``: a bearer token sent with every call; ``timeout``: seconds for unary calls (streams
    have none unless given).  Raises ``ValueError`` for a ``cert`` without ``key`` (or vice versa).
    """

    def __init__(self, target: str = DEFAULT_TARGET, *, tls: TLS | bool | None = None, token: str | None = None,
                 ca: PemSource | None = None, cert: PemSource | None = None, key: PemSource | None = None,
                 metadata: Sequence[tuple[str, str]] = (), timeout: float | None = 60.0,
                 max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self.target = target
        self.timeout = timeout
        self.max_message_bytes = max_message_bytes
        self._limits: Limits | None = _UNASKED
        self.tls = tls_settings(tls, ca, cert, key)
        self._channel = aio_channel(target, self.tls, max_message_bytes)
        self._stub = pb_grpc.StyleTransferStub(self._channel)
        self._admin = apb_grpc.ModelAdminStub(self._channel)
        self._metadata = tuple(metadata) + ((("authorization", f"Bearer {token}"),) if token else ())

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until the channel connects; raise :class:`Unavailable` after ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self._channel.channel_ready(), timeout)
        except asyncio.TimeoutError:
            raise Unavailable(f"no stylecast server reachable at {self.target} after {timeout:g} s") from None

    def _error(self, exc: grpc.RpcError) -> StylecastError:
        """The typed error of a failed call; a connection failure says whether TLS may be the cause
        (an UNAVAILABLE the server itself sent, with its reason and retry advice, is kept as it is)."""
        error = from_rpc_error(exc)
        if error.code == grpc.StatusCode.UNAVAILABLE and not error.reason:
            if "Connection refused" in error.details:
                hint = f"(nothing listens at {self.target}: check the host and port, e.g. CLI --target HOST:PORT)"
            elif self.tls:
                hint = (f"(TLS on: check the CA given for the server's certificate, that {self.target} serves TLS, "
                        "and, if it requires client certificates (mTLS), pass cert= and key=; "
                        "CLI: --tls-cert PATH --tls-key PATH)")
            else:
                hint = (f"(plaintext: if {self.target} serves TLS, pass tls=True or ca=PATH; "
                        "CLI: --tls-ca PATH)")
            error = type(error)(f"{error.details} {hint}".strip(), retry_after_s=error.retry_after_s)
        return error

    async def _unary(self, method: Any, request: Any, timeout: float | None = _DEFAULT) -> Any:
        try:
            return await method(request, metadata=self._metadata,
                                timeout=self.timeout if timeout is _DEFAULT else timeout)
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc) from None

    async def limits(self) -> Limits | None:
        """The server's limits, asked once (``GetLimits``) and then cached; ``None`` for a server
        that predates ``GetLimits``.  Requests are checked against them before they are sent."""
        if self._limits is _UNASKED:
            try:
                msg = await self._stub.GetLimits(pb.GetLimitsRequest(), metadata=self._metadata, timeout=self.timeout)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                    raise self._error(exc) from None
                self._limits = None
            else:
                self._limits = Limits(msg.max_message_bytes, msg.max_pixels)
        return self._limits

    async def _check_image(self, image: pb.Image, request_bytes: int, output: pb.OutputOptions, what: str) -> None:
        check_image(image, request_bytes, output, what, self.max_message_bytes, await self.limits())

    # ------------------------------------------------------------ styles

    async def register_style(self, source: ImageLike, name: str = "") -> Style:
        """Upload a style image (path, encoded bytes, ndarray or PIL image) in 1 MiB chunks.
        Idempotent: the id is the content hash; ``Style.created`` says whether it was new.
        Raises ``ResourceExhausted`` before sending an image over the server's upload limit."""
        data = encoded_bytes(source)
        limits = await self.limits()
        if limits is not None and len(data) > limits.max_message_bytes:
            raise ResourceExhausted(f"the style image is {len(data) / (1 << 20):.1f} MiB, over the server's "
                                    f"{limits.max_message_bytes / (1 << 20):.1f} MiB upload limit (max_message_bytes): "
                                    "scale it down (styles are normalised to 256x256) or save it as JPEG")
        resp = await self._unary(self._stub.RegisterStyle, upload_messages(data, name))
        return parse_style(resp.style, created=resp.created)

    async def get_style(self, style_id: str, *, thumbnail: bool = False) -> Style:
        return parse_style(await self._unary(self._stub.GetStyle,
                                             pb.GetStyleRequest(id=style_id, include_thumbnail=thumbnail)))

    async def list_styles(self, page_size: int = 100) -> AsyncIterator[Style]:
        """Every registered style, fetching pages of ``page_size`` as iteration goes."""
        token = ""
        while True:
            resp = await self._unary(self._stub.ListStyles,
                                     pb.ListStylesRequest(page_size=page_size, page_token=token))
            for style in resp.styles:
                yield parse_style(style)
            token = resp.next_page_token
            if not token:
                return

    async def delete_style(self, style_id: str) -> bool:
        """Delete a style; False when it did not exist."""
        return (await self._unary(self._stub.DeleteStyle, pb.DeleteStyleRequest(id=style_id))).deleted

    async def search_styles(self, style: str | Style | None = None, *, image: ImageLike | None = None,
                            limit: int = 10, model: str = "") -> list[StyleMatch]:
        """Styles nearest to a stored style (``style=``) or to an image's style (``image=``)."""
        request = search_request(style, image, limit, model)
        if request.HasField("image"):
            await self._check_image(request.image, request.ByteSize(), pb.OutputOptions(), "the search image")
        return parse_matches(await self._unary(self._stub.SearchStyles, request))

    # ------------------------------------------------------------ models (ModelAdmin: the admin role)

    async def upload_model(self, package_dir: str | os.PathLike, *,
                           progress: Callable[[int, int], None] | None = None,
                           timeout: float | None = None) -> UploadInfo:
        """Upload a package folder (``NAME/VERSION`` with its manifest.json) in sha256-checked 1 MiB
        chunks.  Resumable: only the chunks the server lacks are sent, so calling it again after an
        interruption continues where it stopped.  ``progress(done_bytes, total_bytes)`` after each chunk."""
        folder = Path(package_dir)
        manifest = (folder / "manifest.json").read_bytes()
        deadline = _deadline(timeout)
        call = self._admin.UploadModel(metadata=self._metadata, timeout=timeout)
        loop = asyncio.get_running_loop()
        try:
            await call.write(apb.ModelChunk(manifest=manifest))
            plan = await call.read()
            if plan is grpc.aio.EOF:
                raise StylecastError("the server ended the upload without answering the manifest")
            done = plan.received_bytes
            if progress:
                progress(done, plan.total_bytes)
            for ref in plan.missing:
                data = await loop.run_in_executor(None, read_chunk, folder, ref.path, ref.index)
                await call.write(apb.ModelChunk(chunk=apb.FileChunk(path=ref.path, index=ref.index, data=data)))
                done += len(data)
                if progress:
                    progress(done, plan.total_bytes)
            await call.done_writing()
            final = await call.read()
            if final is grpc.aio.EOF:
                raise StylecastError("the server ended the upload without confirming it")
            return parse_upload(final)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            error = error_for(await call.code(), await call.details(), await call.trailing_metadata())
            raise _past_deadline(error, deadline, timeout) from None
        finally:
            call.cancel()

    async def list_models(self, name: str = "") -> list[ModelInfo]:
        """Every package on the server (or every version of ``name``), with its artifacts' states."""
        resp = await self._unary(self._admin.ListModels, apb.ListModelsRequest(name=name))
        return [parse_model(m) for m in resp.models]

    async def load_model(self, name: str = "", version: str = "", *, load_order: Sequence[str] = (),
                         timeout: float | None = _DEFAULT) -> ModelInfo:
        """Serve ``name`` (default: the serving model) at ``version`` (default: the latest).  Returns once
        the first artifact of ``load_order`` ("backend:format" entries; default: the server's) is
        active; better ones load and swap in in the background (see :meth:`watch_model`)."""
        resp = await self._unary(self._admin.LoadModel, apb.LoadModelRequest(
            name=name, version=version, load_order=list(load_order)), timeout)
        return parse_model(resp.model)

    async def unload_model(self, name: str, version: str, *, delete_files: bool = False) -> Unloaded:
        """Stop a version loading (and delete an uploaded package's files).  A version serving next
        to others (a traffic split) takes no new streams from now on and closes once the streams
        open on it end (``stopped_serving``, ``draining_streams``; see :meth:`traffic_split`)."""
        resp = await self._unary(self._admin.UnloadModel, apb.UnloadModelRequest(
            name=name, version=version, delete_files=delete_files))
        return Unloaded(resp.unloaded, resp.deleted, resp.stopped_serving, resp.draining_streams)

    async def set_traffic_split(self, weights: Mapping[str, int], model: str = "",
                                timeout: float | None = _DEFAULT) -> list[VersionTraffic]:
        """Share new streams and calls of the served model (or ``model``, which must be it) between
        versions: ``weights`` maps versions (str) to whole percents (int 0..100, summing to 100),
        e.g. ``{"4": 80, "5": 20}``; versions not loaded yet are loaded first.  Open streams keep
        their versions.  Returns every loaded version's share and open streams.  Raises ValueError
        for a weight that is not an int (floats and bools are refused, not truncated),
        :class:`InvalidArgument` (reason INVALID_SPLIT) for a version not installed or weights not
        summing to 100, :class:`FailedPrecondition` when a version cannot be loaded."""
        for version, percent in weights.items():
            if isinstance(percent, bool) or not isinstance(percent, numbers.Integral):
                raise ValueError(f"version {version}: weight {percent!r} is not a whole percent; "
                                 "use an int 0..100, e.g. {'4': 80, '5': 20}")
        resp = await self._unary(self._admin.SetTrafficSplit, apb.SetTrafficSplitRequest(
            model=model, weights={str(v): int(p) for v, p in weights.items()}), timeout)
        return parse_traffic(resp)

    async def traffic_split(self, model: str = "") -> list[VersionTraffic]:
        """Every loaded version of the served model with its share of new traffic and open streams."""
        return parse_traffic(await self._unary(self._admin.GetTrafficSplit, apb.GetTrafficSplitRequest(model=model)))

    async def watch_model(self, name: str = "", version: str = "",
                          timeout: float | None = None) -> AsyncIterator[ModelInfo]:
        """The model's state now and after every change, until none of its artifacts is loading."""
        deadline = _deadline(timeout)
        call = self._admin.WatchModel(apb.WatchModelRequest(name=name, version=version),
                                      metadata=self._metadata, timeout=timeout)
        try:
            async for msg in call:
                yield parse_model(msg)
        except grpc.aio.AioRpcError as exc:
            raise _past_deadline(self._error(exc), deadline, timeout) from None
        finally:
            call.cancel()

    async def list_backends(self) -> list[BackendInfo]:
        resp = await self._unary(self._admin.ListBackends, apb.ListBackendsRequest())
        return [parse_backend(b) for b in resp.backends]

    # ------------------------------------------------------------ stylize

    async def stylize(self, image: ImageLike, style: StyleSpec, *, strength: float | None = None,
                      output: Output | str | None = None, process_max_side: int = 0, model: str = "",
                      timeout: float | None = _DEFAULT, model_version: str = "") -> FrameResult:
        """Stylize one image; the result holds the encoded (or raw) image and server timings.
        ``model_version`` pins a loaded version (default: the server's traffic split picks one).

        Raises ``ValueError`` for an image the SDK cannot send as it is (see ``messages.pixels``) and
        ``ResourceExhausted`` / ``InvalidArgument``, before sending, when the request or its raw
        answer would exceed the client's or the server's limits (:meth:`limits`)."""
        config = to_config(StreamOptions(style, strength, output, "every_frame", process_max_side, model,
                                         model_version))
        request = pb.StylizeImageRequest(config=config, image=to_image(image))
        await self._check_image(request.image, request.ByteSize(), config.output, "the image")
        resp = await self._unary(self._stub.StylizeImage, request, timeout)
        return parse_frame(resp.result)

    async def stream(self, frames: Iterable[Any] | AsyncIterable[Any], style: StyleSpec, *,
                     strength: float | None = None, output: Output | str | None = None,
                     mode: str = "every_frame", process_max_side: int = 0, model: str = "",
                     timeout: float | None = None, max_in_flight: int | None = MAX_IN_FLIGHT,
                     failover: bool = True, model_version: str = "") -> AsyncIterator[FrameResult]:
        """Stream frames (ndarrays travel as raw RGB, bytes as encoded images) and yield one
        result per frame, in send order; frame ids count from 0.  A :class:`StreamOptions` item
        in ``frames`` switches the stream's options from that point on.  At most
        ``max_in_flight`` frames are sent and unanswered (the producer waits): this bounds the
        latency and the memory that transport buffers add (``None``: flow control alone).

        ``failover`` (default on): when the replica serving the stream drains or dies, the
        stream continues on another healthy replica from the first unanswered frame, re-sending
        the StreamConfig in force; every frame is still answered exactly once, in order.
        In-band frame errors are answers and never retried.  ``failover=False`` ends the stream
        with :class:`Unavailable` instead (see :mod:`.failover`).  ``model_version`` pins a loaded
        version for the whole stream (default: the server's traffic split assigns one, which the
        stream keeps)."""
        config = to_config(StreamOptions(style, strength, output, mode, process_max_side, model, model_version))
        await self.limits()  # learnt before the call starts, so frames are checked as they are sent
        deadline = _deadline(timeout)

        def open_call(wait_for_ready: bool, remaining: float | None) -> Any:
            return self._stub.Stylize(metadata=self._metadata, timeout=remaining, wait_for_ready=wait_for_ready)

        async def check(request: pb.StylizeRequest, output: pb.OutputOptions) -> None:
            await self._check_image(request.frame.image, request.ByteSize(), output, f"frame {request.frame.id}")

        driver = FailoverStream(open_call, config, _aiter(frames), check=check, failover=failover,
                                timeout=timeout, max_in_flight=max_in_flight)
        try:
            async for result in driver.results():
                yield result
        except StylecastError as exc:
            raise _past_deadline(exc, deadline, timeout) from None


__all__ = ["AsyncClient", "StylecastError"]
