"""The server's interceptors, outermost first: call metrics (duration by method, status
code and token name, streams included), errors (every exception becomes its mapped status
with rich details), authentication (bearer token and role of every call; per-token limits),
admission control (refuse new calls while shutting down, cap concurrent calls per method),
answer size (a unary answer over the message limit is refused).

Health checks are never refused, so probes keep answering (NOT_SERVING while draining).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections import Counter
from collections.abc import Callable

import grpc

from stylecast.server.auth import ANONYMOUS, ANY_TOKEN, STREAM_METHODS, UNAUTHENTICATED_MESSAGE, Authenticator, required_role
from stylecast.server.errors import (PermissionDenied, ResourceExhausted, ShuttingDown, Unauthenticated,
                                     answer_too_large, rich_status)
from stylecast.server.metrics import Metrics

HEALTH_PREFIX = "/grpc.health.v1.Health/"
RETRY_AFTER_LIMIT_S = 1.0  # RetryInfo of a call refused at the concurrency limit
# A call cancelled this close to its deadline was cancelled by it: the client's own deadline timer
# sends the cancel, and the server's deadline is later by the time the call took to arrive (which
# reaches 0.1-0.2 s on a loaded machine).
DEADLINE_SLACK_S = 0.25

_FACTORIES = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def _behaviour(handler: grpc.RpcMethodHandler):
    return handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream


def _with_behaviour(handler: grpc.RpcMethodHandler, behaviour) -> grpc.RpcMethodHandler:
    factory = _FACTORIES[(handler.request_streaming, handler.response_streaming)]
    return factory(behaviour, request_deserializer=handler.request_deserializer,
                   response_serializer=handler.response_serializer)


async def _abort(context: grpc.aio.ServicerContext, exc: Exception):
    status = rich_status(exc)
    await context.abort(status.code, status.details, status.trailing_metadata)


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Ends a call that raised with the error's status (:func:`~stylecast.server.errors.rich_status`),
    for unary and streaming methods alike.  Place it inside the metrics interceptor, so the
    mapped code is what gets counted, and outside admission, whose refusals it maps too."""

    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        handler = await continuation(details)
        if handler is None:
            return handler
        inner = _behaviour(handler)

        if inspect.isasyncgenfunction(inner):
            async def mapped_stream(request, context):
                try:
                    async for response in inner(request, context):
                        yield response
                except (grpc.aio.AbortError, asyncio.CancelledError):
                    raise
                except Exception as exc:
                    await _abort(context, exc)

            return _with_behaviour(handler, mapped_stream)

        async def mapped(request, context):
            try:
                return await inner(request, context)
            except (grpc.aio.AbortError, asyncio.CancelledError):
                raise
            except Exception as exc:
                await _abort(context, exc)

        return _with_behaviour(handler, mapped)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses a call without a valid bearer token (:class:`Unauthenticated`) or without the role
    its method needs (:class:`PermissionDenied`), and a token's call past its own ``max_streams``
    (Stylize) or ``max_calls`` (everything else).  Health and reflection pass untouched.  Place it
    inside the error interceptor, which maps its refusals."""

    def __init__(self, authenticator: Authenticator) -> None:
        self._auth = authenticator
        self._active: Counter[tuple[str, bool]] = Counter()   # (token name, is a stream) -> open calls

    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        handler = await continuation(details)
        method = details.method
        role = required_role(method)
        if handler is None or role is None:
            return handler
        entry = self._auth.identify(details.invocation_metadata)
        if entry is None or (role != ANY_TOKEN and role not in entry.roles):
            refusal = (Unauthenticated(UNAUTHENTICATED_MESSAGE) if entry is None else PermissionDenied(
                f"{method}: this token lacks the role {role!r}; ask the server's operator for a token with it"))

            async def refuse(request, context):
                raise refusal

            return _with_behaviour(handler, refuse)
        stream = method in STREAM_METHODS
        limit = entry.max_streams if stream else entry.max_calls
        if not limit:
            return handler
        key, inner = (entry.name, stream), _behaviour(handler)
        kind = "streams" if stream else "calls"

        async def limited(request, context):
            if self._active[key] >= limit:
                raise ResourceExhausted(f"token {entry.name!r} already has {limit} {kind} open (its max_{kind}); "
                                        "close one or retry later", subject=f"token:{entry.name}",
                                        retry_after_s=RETRY_AFTER_LIMIT_S)
            self._active[key] += 1
            try:
                return await inner(request, context)
            finally:
                self._active[key] -= 1

        return _with_behaviour(handler, limited)


class AdmissionInterceptor(grpc.aio.ServerInterceptor):
    """``limit_for(method)`` gives a method's concurrency cap (None = unlimited).  Refusals
    raise the hierarchy's errors (:class:`ShuttingDown`, :class:`ResourceExhausted`)."""

    def __init__(self, limit_for: Callable[[str], int | None], shutdown: asyncio.Event) -> None:
        self._limit_for, self._shutdown = limit_for, shutdown
        self._active: Counter[str] = Counter()

    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        handler = await continuation(details)
        method = details.method
        if handler is None or method.startswith(HEALTH_PREFIX):
            return handler
        if self._shutdown.is_set():
            async def refuse(request, context):
                raise ShuttingDown()

            return _with_behaviour(handler, refuse)
        limit = self._limit_for(method)
        if limit is None:
            return handler
        inner = _behaviour(handler)

        async def limited(request, context):
            if self._active[method] >= limit:
                raise ResourceExhausted(f"{method}: {limit} calls already running on this server; retry later "
                                        "or raise the server's limit (max_streams / max_calls)",
                                        subject=method, retry_after_s=RETRY_AFTER_LIMIT_S)
            self._active[method] += 1
            try:
                return await inner(request, context)
            finally:
                self._active[method] -= 1

        return _with_behaviour(handler, limited)


class AnswerSizeInterceptor(grpc.aio.ServerInterceptor):
    """Refuses a unary answer over ``max_message_bytes`` (:class:`ResourceExhausted`, saying what
    to ask for instead).  gRPC itself fails such a send only after the handler returned, so the
    client got gRPC's own words and the call was counted OK.  Place it inside the error
    interceptor.  (Stream answers are checked per frame.)"""

    def __init__(self, max_message_bytes: int) -> None:
        self._limit = max_message_bytes

    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        handler = await continuation(details)
        if handler is None or handler.response_streaming:
            return handler
        inner = _behaviour(handler)

        async def checked(request, context):
            response = await inner(request, context)
            if response is not None and (size := response.ByteSize()) > self._limit:
                raise ResourceExhausted(answer_too_large(size, self._limit))
            return response

        return _with_behaviour(handler, checked)


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Times every call by method and final status code, streams included.

    Unary responses go to ``stylecast_rpc_duration_seconds``; response streams to
    ``stylecast_stream_duration_seconds`` and ``stylecast_active_streams``.
    ``token_label(metadata)`` names the caller's token (bounded); without it every call is
    ``anonymous``.  Place it first so refused calls are counted too.
    """

    def __init__(self, metrics: Metrics, token_label: Callable[[object], str] | None = None) -> None:
        self._metrics = metrics
        self._token_label = token_label

    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        handler = await continuation(details)
        if handler is None:
            return handler
        method, inner = details.method, _behaviour(handler)
        token = self._token_label(details.invocation_metadata) if self._token_label else ANONYMOUS
        streaming = handler.response_streaming
        hist = self._metrics.stream_duration if streaming else self._metrics.rpc_latency
        active = self._metrics.active_streams.labels(method) if streaming else None

        def finish(start: float, context, exc: BaseException | None) -> None:
            hist.labels(method, _final_code(context, exc), token).observe(time.perf_counter() - start)
            if active is not None:  # after: a scrape that sees the stream gone also sees it counted
                active.dec()

        if inspect.isasyncgenfunction(inner):
            async def timed_stream(request, context):
                start, exc = time.perf_counter(), None
                if active is not None:
                    active.inc()
                try:
                    async for response in inner(request, context):
                        yield response
                except BaseException as e:
                    exc = e
                    raise
                finally:
                    finish(start, context, exc)

            return _with_behaviour(handler, timed_stream)

        async def timed(request, context):
            start, exc = time.perf_counter(), None
            if active is not None:
                active.inc()
            try:
                return await inner(request, context)
            except BaseException as e:
                exc = e
                raise
            finally:
                finish(start, context, exc)

        return _with_behaviour(handler, timed)


def _final_code(context, exc: BaseException | None) -> str:
    """The status name a call ended with: the aborted/set code, else OK, DEADLINE_EXCEEDED or
    CANCELLED (the call was cancelled under the handler), or UNKNOWN."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int) and code:
        return next((c.name for c in grpc.StatusCode if c.value[0] == code), "UNKNOWN")
    if exc is None:
        return "OK"
    if isinstance(exc, asyncio.CancelledError):  # the call's deadline passed, or the client cancelled it
        remaining = context.time_remaining()
        return "DEADLINE_EXCEEDED" if remaining is not None and remaining < DEADLINE_SLACK_S else "CANCELLED"
    return "UNKNOWN"
