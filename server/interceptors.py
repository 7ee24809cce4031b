"""Admission control: refuse new calls while shutting down, cap concurrent calls per method.

Health checks are never refused, so probes keep answering (NOT_SERVING while draining).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import grpc

from stylecast.server.errors import ShuttingDown

HEALTH_PREFIX = "/grpc.health.v1.Health/"

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


class AdmissionInterceptor(grpc.aio.ServerInterceptor):
    """``limit_for(method)`` gives a method's concurrency cap (None = unlimited)."""

    def __init__(self, limit_for: Callable[[str], int | None], shutdown: asyncio.Event) -> None:
        self._limit_for, self._shutdown = limit_for, shutdown
        self._active: Counter[str] = Counter()

    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        handler = await continuation(details)
        method = details.method
        if handler is None or method.startswith(HEALTH_PREFIX):
            return handler
        if self._shutdown.is_set():
            unavailable = ShuttingDown()

            async def refuse(request, context):
                await context.abort(unavailable.code, str(unavailable))

            return _with_behaviour(handler, refuse)
        limit = self._limit_for(method)
        if limit is None:
            return handler
        inner = _behaviour(handler)

        async def limited(request, context):
            if self._active[method] >= limit:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                    f"{method}: {limit} calls already running on this server; retry later "
                                    "or raise the server's limit (max_streams / max_calls)")
            self._active[method] += 1
            try:
                return await inner(request, context)
            finally:
                self._active[method] -= 1

        return _with_behaviour(handler, limited)
