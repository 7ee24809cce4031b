"""gRPC channel construction: message-size limits, keepalive and optional (m)TLS."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import grpc

DEFAULT_TARGET = "localhost:50051"
MAX_MESSAGE_BYTES = 64 << 20
KEEPALIVE_MS = 60_000
KEEPALIVE_TIMEOUT_MS = 20_000


@dataclass(frozen=True)
class TLS:
    """TLS settings: ``ca`` verifies the server (system roots when None); ``cert`` + ``key``
    present a client certificate (mTLS).  Each is a PEM path or PEM bytes."""

    ca: str | os.PathLike | bytes | None = None
    cert: str | os.PathLike | bytes | None = None
    key: str | os.PathLike | bytes | None = None
    server_name: str | None = None  # override the name checked against the certificate

    def credentials(self) -> grpc.ChannelCredentials:
        def pem(value: str | os.PathLike | bytes | None) -> bytes | None:
            return value if value is None or isinstance(value, bytes) else Path(value).read_bytes()

        return grpc.ssl_channel_credentials(root_certificates=pem(self.ca), private_key=pem(self.key),
                                            certificate_chain=pem(self.cert))


def channel_options(max_message_bytes: int = MAX_MESSAGE_BYTES, tls: TLS | None = None
                    ) -> list[tuple[str, int | str]]:
    options: list[tuple[str, int | str]] = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", KEEPALIVE_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    if tls is not None and tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    return options


def aio_channel(target: str, tls: TLS | bool | None = None,
                max_message_bytes: int = MAX_MESSAGE_BYTES) -> grpc.aio.Channel:
    """An asyncio channel to ``target``; ``tls=True`` means TLS with the system roots."""
    if tls is True:
        tls = TLS()
    options = channel_options(max_message_bytes, tls or None)
    if tls:
        return grpc.aio.secure_channel(target, tls.credentials(), options=options)
    return grpc.aio.insecure_channel(target, options=options)
