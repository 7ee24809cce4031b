"""Building, running and gracefully stopping the gRPC server (``stylecast serve``)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from stylecast.backends.base import BackendError
from stylecast.backends.memory import keep_freed_memory
from stylecast.backends.package import PackageError
from stylecast.server.admin_servicer import ModelAdminServicer
from stylecast.server.config import ConfigError, ServerConfig, load_config
from stylecast.server.engine import Engine
from stylecast.server.errors import StylecastError
from stylecast.server.health import HealthServicer
from stylecast.server.interceptors import (AdmissionInterceptor, AnswerSizeInterceptor, ErrorInterceptor,
                                           MetricsInterceptor)
from stylecast.server.metrics import Metrics, MetricsEndpoint, serve_metrics
from stylecast.server.servicer import StyleTransferServicer
from stylecast.v1 import model_admin_pb2 as apb
from stylecast.v1 import model_admin_pb2_grpc as admin_grpc
from stylecast.v1 import stylecast_pb2 as pb
from stylecast.v1 import stylecast_pb2_grpc as pb_grpc

log = logging.getLogger("stylecast.server")
SERVICE = pb.DESCRIPTOR.services_by_name["StyleTransfer"].full_name
ADMIN_SERVICE = apb.DESCRIPTOR.services_by_name["ModelAdmin"].full_name


def grpc_options(config: ServerConfig) -> list[tuple[str, int]]:
    """Message size limits and keepalive for long streams."""
    return [
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.keepalive_time_ms", int(config.keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(config.keepalive_timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 5000),
        ("grpc.http2.max_ping_strikes", 0),
    ]


@dataclass
class RunningServer:
    """A started server: its bound ``port``, the engine, and :meth:`stop`."""

    server: grpc.aio.Server
    port: int
    engine: Engine
    health: HealthServicer
    shutdown: asyncio.Event
    _stopping: asyncio.Task | None = None
    metrics_endpoint: MetricsEndpoint | None = None   # /metrics, when config.metrics_port is set
    admin_port: int | None = None                     # ModelAdmin (loopback only); None = off
    admin_server: grpc.aio.Server | None = None       # when ModelAdmin has a port of its own
    admin_health: HealthServicer | None = None        # that server's health service

    async def stop(self, grace: float | None = None) -> None:
        """Health NOT_SERVING → refuse new calls → let streams answer what they read → close.

        Idempotent: later calls wait for the first one to finish."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop(grace))
        await asyncio.shield(self._stopping)

    async def _stop(self, grace: float | None) -> None:
        log.info("shutting down (grace %.1fs)", grace or 0)
        for health in (self.health, self.admin_health):
            if health is not None:
                await health.enter_graceful_shutdown()  # open Watch streams send NOT_SERVING and end
        self.shutdown.set()
        await asyncio.gather(*(s.stop(grace) for s in (self.server, self.admin_server) if s is not None))
        await self.engine.close()
        if self.metrics_endpoint is not None:
            self.metrics_endpoint.close()


def _limits(config: ServerConfig):
    stylize = f"/{SERVICE}/Stylize"
    own = f"/{SERVICE}/"

    def limit_for(method: str) -> int | None:
        if method == stylize:
            return config.max_streams
        return config.max_calls if method.startswith(own) else None

    return limit_for


def _serve_metrics(metrics: Metrics, config: ServerConfig) -> MetricsEndpoint | None:
    if not config.metrics_port:
        return None
    try:
        endpoint = serve_metrics(metrics.registry, config.host, config.metrics_port)
    except OSError as exc:
        raise StylecastError(f"cannot serve metrics on {config.host}:{config.metrics_port}: {exc}") from None
    log.info("metrics on http://%s:%d/metrics", config.host, endpoint.port)
    return endpoint


def _grpc_server(config: ServerConfig, metrics: Metrics, shutdown: asyncio.Event,
                 services: tuple[str, ...]) -> tuple[grpc.aio.Server, HealthServicer]:
    """A server with the interceptors, health and reflection (servicers are added by the caller)."""
    interceptors = [MetricsInterceptor(metrics), ErrorInterceptor(), AdmissionInterceptor(_limits(config), shutdown),
                    AnswerSizeInterceptor(config.max_message_bytes)]
    server = grpc.aio.server(interceptors=interceptors, options=grpc_options(config))
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*services, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server)
    return server, health_servicer


def _listen(server: grpc.aio.Server, address: str) -> int:
    try:
        return server.add_insecure_port(address)
    except RuntimeError as exc:
        raise StylecastError(f"cannot listen on {address}: {exc}") from None


async def start(config: ServerConfig) -> RunningServer:
    """Load the model, start serving on ``config.address`` (port 0 = any) and return the handle.

    ModelAdmin can write files and load code-bearing models, so until auth exists it is
    reachable from this machine only: on the main port when ``config.host`` is a loopback
    address, else on its own server bound to ``127.0.0.1:config.admin_port``."""
    metrics = Metrics()
    endpoint = _serve_metrics(metrics, config)  # up before loading, so load progress shows
    try:
        engine = await Engine.create(config, metrics)
    except BaseException:
        if endpoint is not None:
            endpoint.close()
        raise
    shutdown = asyncio.Event()
    shared = config.admin and config.admin_on_main_port
    server, health_servicer = _grpc_server(config, metrics, shutdown, (SERVICE, ADMIN_SERVICE) if shared else (SERVICE,))
    limits = pb.Limits(max_message_bytes=config.max_message_bytes, max_pixels=config.max_pixels)
    servicer = StyleTransferServicer(engine.sessions, engine.styles, metrics, limits, shutdown)
    pb_grpc.add_StyleTransferServicer_to_server(servicer, server)
    admin_server = admin_health = None
    if config.admin and not shared:
        admin_server, admin_health = _grpc_server(config, metrics, shutdown, (ADMIN_SERVICE,))
    if config.admin:
        admin_grpc.add_ModelAdminServicer_to_server(ModelAdminServicer(engine.control), admin_server or server)
    try:
        port = _listen(server, config.address)
    except StylecastError:
        await engine.close()
        if endpoint is not None:
            endpoint.close()
        raise
    admin_port = port if shared else None
    if admin_server is not None:
        try:
            admin_port = _listen(admin_server, f"127.0.0.1:{config.admin_port}")
        except StylecastError as exc:  # serving matters more than administration
            log.warning("ModelAdmin disabled: %s (set admin_port, or admin = false)", exc)
            admin_server = None
    await server.start()
    if admin_server is not None:
        await admin_server.start()
    for name in ("", SERVICE):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    if admin_port is not None:
        log.info("model admin on 127.0.0.1:%d (loopback only)", admin_port)
    model = engine.slot.model
    log.info("artifact %s of %s active; load order %s", model.format, model.package.key,
             config.load_order or "(one artifact)")
    log.info("stylecast serving %s with %s on %s:%d", model.package.key, model.backend.name, config.host, port)
    return RunningServer(server, port, engine, health_servicer, shutdown, metrics_endpoint=endpoint,
                         admin_port=admin_port, admin_server=admin_server, admin_health=admin_health)


async def serve(config: ServerConfig) -> None:
    """Serve until SIGTERM or SIGINT, then stop gracefully within ``config.grace_s``."""
    running = await start(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await running.stop(config.grace_s)


def run(config: ServerConfig) -> None:
    asyncio.run(serve(config))


def main(flags: Mapping[str, Any]) -> None:
    """Entry point of ``stylecast serve``: ``flags`` are CLI values (None = unset), ``config`` a TOML path."""
    try:
        config = load_config(flags, os.environ, flags.get("config"))
        logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        if not keep_freed_memory():
            log.info("no glibc mallopt: freed frame buffers go back to the kernel")
        run(config)
    except (ConfigError, StylecastError, PackageError, BackendError) as exc:
        print(f"stylecast serve: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
