"""``grpc.health.v1.Health`` whose Watch streams end once they have sent NOT_SERVING at shutdown.

grpcio's own asyncio servicer keeps every Watch stream open until the client leaves, and every
client with client-side health checking holds one: ``server.stop(grace)`` then waits the whole
grace period for them.  Here :meth:`HealthServicer.enter_graceful_shutdown` marks every service
NOT_SERVING, each watcher sends that and ends its stream (status OK), and new watchers get the
status and end at once, so only real work holds the shutdown.
"""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class HealthServicer(health_pb2_grpc.HealthServicer):
    """Check and Watch over a status per service name (``""`` = the whole server, SERVING)."""

    def __init__(self) -> None:
        self._status: dict[str, int] = {"": SERVING}
        self._changed = asyncio.Condition()
        self._draining = False

    async def Check(self, request: health_pb2.HealthCheckRequest, context) -> health_pb2.HealthCheckResponse:
        status = self._status.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(self, request: health_pb2.HealthCheckRequest, context) -> None:
        """Send the status now and after every change; end once draining and the last status is sent."""
        sent = None
        while True:
            async with self._changed:
                await self._changed.wait_for(lambda: self._current(request.service) != sent or self._draining)
                status = self._current(request.service)
            if status != sent:
                await context.write(health_pb2.HealthCheckResponse(status=status))
                sent = status
            if self._draining:
                return

    def _current(self, service: str) -> int:
        return self._status.get(service, SERVICE_UNKNOWN)

    async def set(self, service: str, status: int) -> None:
        """Set ``service``'s status (ignored once shutting down)."""
        async with self._changed:
            if not self._draining:
                self._status[service] = status
                self._changed.notify_all()

    async def enter_graceful_shutdown(self) -> None:
        """Every service NOT_SERVING for good; open Watch streams send it and end."""
        async with self._changed:
            self._draining = True
            self._status = dict.fromkeys(self._status, NOT_SERVING)
            self._changed.notify_all()
