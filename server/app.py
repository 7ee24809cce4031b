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
from stylecast.backends.memory import keep_freed_memory, release_free_memory
from stylecast.backends.package import PackageError
from stylecast.server.admin_servicer import ModelAdminServicer
from stylecast.server.auth import Authenticator
from stylecast.server.config import ConfigError, ServerConfig, load_config
from stylecast.server.engine import Engine
from stylecast.server.errors import StylecastError
from stylecast.server.health import HealthServicer
from stylecast.server.interceptors import (AdmissionInterceptor, AnswerSizeInterceptor, AuthInterceptor,
                                           ErrorInterceptor, MetricsInterceptor)
from stylecast.server.metrics import Metrics, MetricsEndpoint, serve_metrics
from stylecast.server.packages import malloc_arenas
from stylecast.server.servicer import StyleTransferServicer, add_to_server
from stylecast.server.stream import FrameMemory
from stylecast.server.tls import metrics_tls_kwargs, server_credentials
from stylecast.v1 import model_admin_pb2 as apb
from stylecast.v1 import model_admin_pb2_grpc as admin_grpc
from stylecast.v1 import stylecast_pb2 as pb

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
    admin_port: int | None = None                     # ModelAdmin's port; None = off
    admin_server: grpc.aio.Server | None = None       # when ModelAdmin has a port of its own
    admin_health: HealthServicer | None = None        # that server's health service
    health_server: grpc.aio.Server | None = None      # plaintext health only (config.health_port)
    health_port: int | None = None
    authenticator: Authenticator | None = None        # None = no authentication (loopback)
    trimmer: asyncio.Task | None = None               # hands freed memory back every malloc_trim_s

    def reload_tokens(self) -> bool:
        """Re-read the tokens file (SIGHUP); open calls keep running.  False when it failed or auth is off."""
        return self.authenticator.reload() if self.authenticator is not None else False

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
        if self.trimmer is not None:
            self.trimmer.cancel()
        await asyncio.gather(*(s.stop(grace) for s in (self.server, self.admin_server, self.health_server)
                               if s is not None))
        await self.engine.close()
        if self.metrics_endpoint is not None:
            self.metrics_endpoint.close()


async def release_memory_every(seconds: float) -> None:
    """Hand the memory malloc keeps free back to the kernel every ``seconds``, on a worker thread
    (glibc ``malloc_trim``: 2–16 ms with the arena locked). What a burst of large images left in
    the heap goes within ``seconds``; the frame buffers kept between frames are faulted back in
    once per period instead of once per frame."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(seconds)
        await loop.run_in_executor(None, release_free_memory)


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
    tls = metrics_tls_kwargs(config)
    try:
        endpoint = serve_metrics(metrics.registry, config.host, config.metrics_port, **tls)
    except OSError as exc:
        raise StylecastError(f"cannot serve metrics on {config.host}:{config.metrics_port}: {exc}") from None
    log.info("metrics on %s://%s:%d/metrics", "https" if tls else "http", config.host, endpoint.port)
    return endpoint


def _grpc_server(config: ServerConfig, metrics: Metrics, shutdown: asyncio.Event, services: tuple[str, ...],
                 auth: Authenticator | None) -> tuple[grpc.aio.Server, HealthServicer]:
    """A server with the interceptors, health and reflection (servicers are added by the caller).

    Metrics first (refused calls are counted too), errors, authentication, admission, answer sizes."""
    interceptors = [MetricsInterceptor(metrics, auth.label if auth is not None else None), ErrorInterceptor(),
                    *((AuthInterceptor(auth),) if auth is not None else ()),
                    AdmissionInterceptor(_limits(config), shutdown), AnswerSizeInterceptor(config.max_message_bytes)]
    server = grpc.aio.server(interceptors=interceptors, options=grpc_options(config))
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*services, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server)
    return server, health_servicer


def _listen(server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None) -> int:
    try:
        if credentials is not None:
            return server.add_secure_port(address, credentials)
        return server.add_insecure_port(address)
    except RuntimeError as exc:
        raise StylecastError(f"cannot listen on {address}: {exc}") from None


def _log_exposure(config: ServerConfig, port: int) -> None:
    tls = "TLS with client certificates" if config.tls_client_ca else "TLS" if config.tls else "plaintext"
    if config.auth:
        log.info("authentication on: bearer tokens from %s; %s", config.tokens_file, tls)
    elif config.loopback:
        log.info("no tokens file: listening on loopback only (%s:%d, %s); set tokens_file to serve other machines",
                 config.host, port, tls)
    else:
        log.warning("listening on %s:%d WITHOUT authentication (allow_unauthenticated), %s: anyone who reaches "
                    "it can delete styles and use the server", config.host, port, tls)


async def start(config: ServerConfig) -> RunningServer:
    """Load the model, start serving on ``config.address`` (port 0 = any) and return the handle.

    ModelAdmin can write files and load code-bearing models: with authentication it is on the
    main port for the ``admin`` role; without, reachable from this machine only (the main port
    when ``config.host`` is a loopback address, else its own server on ``127.0.0.1:admin_port``).
    Raises ConfigError for an unreadable tokens file or TLS files, or a SQLite style store that
    cannot be opened."""
    auth = Authenticator(config.tokens_file) if config.auth else None
    credentials = server_credentials(config)
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
    server, health_servicer = _grpc_server(config, metrics, shutdown, (SERVICE, ADMIN_SERVICE) if shared else (SERVICE,),
                                           auth)
    limits = pb.Limits(max_message_bytes=config.max_message_bytes, max_pixels=config.max_pixels)
    memory = FrameMemory(config.frame_memory_bytes, metrics.stream_buffered_bytes)
    servicer = StyleTransferServicer(engine.sessions, engine.styles, metrics, limits, shutdown, memory)
    add_to_server(servicer, server)
    admin_server = admin_health = None
    if config.admin and not shared:
        admin_server, admin_health = _grpc_server(config, metrics, shutdown, (ADMIN_SERVICE,), None)
    if config.admin:
        admin_grpc.add_ModelAdminServicer_to_server(ModelAdminServicer(engine.control), admin_server or server)
    async def close_started() -> None:
        await engine.close()
        if endpoint is not None:
            endpoint.close()

    try:
        port = _listen(server, config.address, credentials)
    except StylecastError:
        await close_started()
        raise
    admin_port = port if shared else None
    if admin_server is not None:
        try:
            admin_port = _listen(admin_server, f"127.0.0.1:{config.admin_port}", credentials)
        except StylecastError as exc:  # serving matters more than administration
            log.warning("ModelAdmin disabled: %s (set admin_port, or admin = false)", exc)
            admin_server = None
    health_server, health_port = None, None
    if config.health_port:
        health_server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, health_server)
        try:
            health_port = _listen(health_server, f"{config.host}:{config.health_port}", None)
        except StylecastError:
            await close_started()
            raise
        await health_server.start()
        log.info("plaintext health checks (only) on %s:%d", config.host, health_port)
    await server.start()
    if admin_server is not None:
        await admin_server.start()
    for name in ("", SERVICE):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    _log_exposure(config, port)
    if admin_port is not None:
        where = "the main port" if shared else f"127.0.0.1:{admin_port}"
        log.info("model admin on %s (%s)", where, "the admin role" if config.auth else "loopback only")
    model = engine.slot.model
    log.info("artifact %s of %s active; load order %s", model.format, model.package.key,
             config.load_order or "(one artifact)")
    loaded = engine.slot.loaded()
    split = "" if len(loaded) < 2 else " (traffic split " + ", ".join(
        f"{m.package.version}={engine.slot.percent(m.key)}%" for m in loaded) + ")"
    log.info("stylecast serving %s%s with %s on %s:%d", model.package.key, split, model.backend.name,
             config.host, port)
    trimmer = asyncio.ensure_future(release_memory_every(config.malloc_trim_s)) if config.malloc_trim_s else None
    return RunningServer(server, port, engine, health_servicer, shutdown, metrics_endpoint=endpoint,
                         admin_port=admin_port, admin_server=admin_server, admin_health=admin_health,
                         authenticator=auth, health_server=health_server, health_port=health_port,
                         trimmer=trimmer)


async def serve(config: ServerConfig) -> None:
    """Serve until SIGTERM or SIGINT, then stop gracefully within ``config.grace_s``; SIGHUP
    re-reads the tokens file."""
    running = await start(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, running.reload_tokens)
    await stop.wait()
    await running.stop(config.grace_s)


def run(config: ServerConfig) -> None:
    asyncio.run(serve(config))


def main(flags: Mapping[str, Any]) -> None:
    """Entry point of ``stylecast serve``: ``flags`` are CLI values (None = unset), ``config`` a TOML path."""
    try:
        config = load_config(flags, os.environ, flags.get("config"))
        logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        if not keep_freed_memory(arenas=malloc_arenas(config)):
            log.info("no glibc mallopt: freed frame buffers go back to the kernel")
        run(config)
    except (ConfigError, StylecastError, PackageError, BackendError) as exc:
        print(f"stylecast serve: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
