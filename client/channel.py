"""gRPC channel construction: message-size limits, keepalive, optional (m)TLS, and the service
config that balances calls over replicas.

``target`` is any gRPC name: ``host:port``, several addresses (``ipv4:10.0.0.1:50051,10.0.0.2:50051``)
or a DNS name resolving to every replica (``dns:///stylecast-headless.ns.svc:50051``, a Kubernetes
headless Service).  The service config (gRPC's own machinery, no hand-written loops):

- ``round_robin`` over every resolved address: each call (and so each stream) goes to the next
  ready replica;
- client-side health checking (``grpc.health.v1.Health/Watch`` on every connection): a replica
  that reports NOT_SERVING (draining) stops getting new calls before it closes;
- a retry policy for the idempotent calls (UNAVAILABLE: a replica went away, or the style store
  is briefly unreachable, whose answer carries gRPC's retry pushback).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import grpc

DEFAULT_TARGET = "localhost:50051"
MAX_MESSAGE_BYTES = 64 << 20
KEEPALIVE_MS = 60_000
KEEPALIVE_TIMEOUT_MS = 20_000
PemSource = str | os.PathLike | bytes   # a PEM file's path, or its bytes

RETRY_BUFFER_BYTES = 16 << 20  # per call: a style upload up to this size is retried too

_SERVICE = "stylecast.v1.StyleTransfer"
_ADMIN = "stylecast.v1.ModelAdmin"
# Calls whose repetition changes nothing: styles are content-addressed, stylizing is a pure function.
# (A retried DeleteStyle whose first attempt did delete answers deleted=False.)
IDEMPOTENT = {_SERVICE: ("StylizeImage", "RegisterStyle", "GetStyle", "ListStyles", "DeleteStyle", "SearchStyles",
                         "GetLimits"),
              _ADMIN: ("ListModels", "ListBackends", "GetTrafficSplit")}


@dataclass(frozen=True)
class TLS:
    """TLS settings: ``ca`` verifies the server (system roots when None); ``cert`` + ``key``
    present a client certificate (mTLS).  Each is a PEM path or PEM bytes."""

    ca: PemSource | None = None
    cert: PemSource | None = None
    key: PemSource | None = None
    server_name: str | None = None  # override the name checked against the certificate

    def credentials(self) -> grpc.ChannelCredentials:
        def pem(value: PemSource | None) -> bytes | None:
            return value if value is None or isinstance(value, bytes) else Path(value).read_bytes()

        return grpc.ssl_channel_credentials(root_certificates=pem(self.ca), private_key=pem(self.key),
                                            certificate_chain=pem(self.cert))


def service_config(max_attempts: int = 4) -> dict:
    """round_robin, health checking of the whole server ("" turns NOT_SERVING on drain) and a
    retry policy (UNAVAILABLE, exponential backoff 0.1 s … 1 s) for the :data:`IDEMPOTENT` calls."""
    return {
        "loadBalancingConfig": [{"round_robin": {}}],
        "healthCheckConfig": {"serviceName": ""},
        "methodConfig": [{
            "name": [{"service": service, "method": method}
                     for service, methods in IDEMPOTENT.items() for method in methods],
            "retryPolicy": {"maxAttempts": max_attempts, "initialBackoff": "0.1s", "maxBackoff": "1s",
                            "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]},
        }],
    }


def channel_options(max_message_bytes: int = MAX_MESSAGE_BYTES, tls: TLS | None = None
                    ) -> list[tuple[str, int | str]]:
    options: list[tuple[str, int | str]] = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", KEEPALIVE_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.service_config", json.dumps(service_config())),
        ("grpc.service_config_disable_resolution", 1),  # ours, not one from DNS TXT records
        ("grpc.enable_retries", 1),
        ("grpc.per_rpc_retry_buffer_size", RETRY_BUFFER_BYTES),
    ]
    if tls is not None and tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    return options


def tls_settings(tls: TLS | bool | None = None, ca: PemSource | None = None, cert: PemSource | None = None,
                 key: PemSource | None = None) -> TLS | None:
    """One :class:`TLS` from the SDK's ``tls=``, ``ca=``, ``cert=``, ``key=`` arguments (None: plaintext).

    ``ca``, ``cert`` or ``key`` imply TLS; ``cert`` and ``key`` go together (mTLS)."""
    if (cert is None) != (key is None):
        raise ValueError("a client certificate needs both cert= and key=")
    if isinstance(tls, TLS):
        if ca is not None or cert is not None:
            raise ValueError("pass either tls=TLS(...) or ca=/cert=/key=, not both")
        return tls
    if tls is False and (ca is not None or cert is not None):
        raise ValueError("ca=/cert=/key= need TLS; drop tls=False")
    if tls or ca is not None or cert is not None:
        return TLS(ca=ca, cert=cert, key=key)
    return None


def aio_channel(target: str, tls: TLS | bool | None = None,
                max_message_bytes: int = MAX_MESSAGE_BYTES) -> grpc.aio.Channel:
    """An asyncio channel to ``target``; ``tls=True`` means TLS with the system roots."""
    if tls is True:
        tls = TLS()
    options = channel_options(max_message_bytes, tls or None)
    if tls:
        return grpc.aio.secure_channel(target, tls.credentials(), options=options)
    return grpc.aio.insecure_channel(target, options=options)
