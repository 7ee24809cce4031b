"""TLS and mTLS for the gRPC port and the metrics endpoint, from PEM files.

``tls_cert`` + ``tls_key`` turn TLS on; ``tls_client_ca`` additionally requires every client
to present a certificate signed by that CA (mTLS).
"""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc

from stylecast.server.config import ConfigError, ServerConfig


def _pem(path: str, what: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {path}: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in data:
        raise ConfigError(f"{what} {path}: not a PEM file")
    return data


def server_credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    """The gRPC server credentials the config asks for, or None for plaintext."""
    if not config.tls:
        return None
    pair = (_pem(config.tls_key, "tls_key"), _pem(config.tls_cert, "tls_cert"))
    client_ca = _pem(config.tls_client_ca, "tls_client_ca") if config.tls_client_ca else None
    _check_pair(config)
    return grpc.ssl_server_credentials([pair], root_certificates=client_ca, require_client_auth=client_ca is not None)


def _check_pair(config: ServerConfig) -> None:
    """Fail at start, not at the first handshake, when the key does not match the certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    except ssl.SSLError as exc:
        raise ConfigError(f"tls_cert {config.tls_cert} / tls_key {config.tls_key}: {exc.reason or exc}") from None


def metrics_tls_kwargs(config: ServerConfig) -> dict[str, object]:
    """Keyword arguments of ``prometheus_client.start_http_server`` for HTTPS (empty: plain HTTP)."""
    if not (config.metrics_tls and config.tls):
        return {}
    kwargs: dict[str, object] = {"certfile": config.tls_cert, "keyfile": config.tls_key}
    if config.tls_client_ca:
        kwargs |= {"client_cafile": config.tls_client_ca, "client_auth_required": True}
    return kwargs
