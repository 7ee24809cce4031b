"""TLS and mTLS round trips with the SDK and the CLI, certificates from ``stylecast certs dev``;
a plaintext client against a TLS server fails with a message that says so."""

from __future__ import annotations

import asyncio
import http.client
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import encoded, free_port, picture
from typer.testing import CliRunner

from stylecast.client import AsyncClient, Client, Unavailable
from stylecast.client.certs import DevCerts, write_dev_certs
from stylecast.client.cli import app
from stylecast.server.config import ConfigError
from test_auth import tokens_file


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("certs")
    result = CliRunner().invoke(app, ["certs", "dev", str(folder)])
    assert result.exit_code == 0, result.output
    return DevCerts(*(folder / n for n in ("ca.pem", "ca.key", "server.pem", "server.key", "client.pem",
                                           "client.key")))


async def cli(*args) -> tuple[int, str]:
    result = await asyncio.to_thread(CliRunner().invoke, app, [str(a) for a in args])
    return result.exit_code, result.output


def test_certs_dev_refuses_to_overwrite_and_keeps_keys_private(certs):
    assert oct(certs.server_key.stat().st_mode & 0o777) == "0o600"
    result = CliRunner().invoke(app, ["certs", "dev", str(certs.ca.parent)])
    assert result.exit_code == 1 and "exist" in result.output
    context = ssl.create_default_context(cafile=certs.ca)  # the CA verifies the server certificate
    context.load_cert_chain(certs.server_cert, certs.server_key)


async def test_tls_round_trip_with_sdk_and_cli_and_plaintext_client_told_why(server_factory, certs, tmp_path):
    server = await server_factory(tls_cert=str(certs.server_cert), tls_key=str(certs.server_key),
                                  host="localhost")
    target = f"localhost:{server.port}"
    async with AsyncClient(target, ca=certs.ca) as client:
        style = await client.register_style(picture(64, 64, seed=5), name="tls")
        result = await client.stylize(picture(32, 24), style.id, output="raw")
        assert (result.width, result.height) == (32, 24)
    code, out = await cli("styles", "list", "--target", target, "--tls-ca", certs.ca)
    assert code == 0 and style.id in out, out

    async with AsyncClient(target, timeout=5) as plaintext:
        with pytest.raises(Unavailable, match="serves TLS, pass tls=True or ca=PATH"):
            await plaintext.get_style(style.id)
    code, out = await cli("styles", "list", "--target", target)
    assert code == 1 and "--tls-ca" in out, out
    # a client trusting other roots cannot be fooled into a handshake
    other = write_dev_certs(tmp_path / "other")
    async with AsyncClient(target, ca=other.ca, timeout=5) as wrong:
        with pytest.raises(Unavailable, match="TLS on"):
            await wrong.get_style(style.id)


async def test_a_connection_refused_points_at_the_address_not_at_tls():
    """Nothing listening is a wrong host or port: the hint says so instead of suggesting TLS options."""
    target = f"127.0.0.1:{free_port()}"
    async with AsyncClient(target, timeout=5) as client:
        with pytest.raises(Unavailable, match=f"nothing listens at {target}") as err:
            await client.get_style("0" * 64)
    assert "tls=True" not in str(err.value)


async def test_mtls_requires_a_client_certificate_and_works_with_tokens(server_factory, certs, tmp_path):
    tokens = tokens_file(tmp_path / "t.toml", {"c": ("stylize", "styles")})
    server = await server_factory(tls_cert=str(certs.server_cert), tls_key=str(certs.server_key),
                                  tls_client_ca=str(certs.ca), tokens_file=str(tokens), host="localhost")
    target = f"localhost:{server.port}"

    def sdk_round_trip() -> str:
        with Client(target, ca=certs.ca, cert=certs.client_cert, key=certs.client_key, token="tok-c") as client:
            return client.register_style(encoded(picture(48, 48, seed=9)), name="m").id

    style_id = await asyncio.to_thread(sdk_round_trip)
    code, out = await cli("styles", "list", "--target", target, "--tls-ca", certs.ca, "--tls-cert",
                          certs.client_cert, "--tls-key", certs.client_key, "--token", "tok-c")
    assert code == 0 and style_id in out, out
    async with AsyncClient(target, ca=certs.ca, token="tok-c", timeout=5) as no_cert:
        with pytest.raises(Unavailable):
            await no_cert.get_style(style_id)
    with pytest.raises(ValueError, match="cert= and key="):
        Client(target, ca=certs.ca, cert=certs.client_cert)


async def test_metrics_endpoint_serves_https(server_factory, certs):
    from test_metrics import free_port

    server = await server_factory(tls_cert=str(certs.server_cert), tls_key=str(certs.server_key),
                                  metrics_port=free_port(), metrics_tls=True, host="localhost")
    context = ssl.create_default_context(cafile=certs.ca)
    url = f"https://localhost:{server.metrics_endpoint.port}/metrics"
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, context=context, timeout=10).read())
    assert b"stylecast_styles" in body
    with pytest.raises((urllib.error.URLError, http.client.HTTPException, ConnectionError)):  # no HTTP answer
        await asyncio.to_thread(lambda: urllib.request.urlopen(url.replace("https", "http"), timeout=5).read())


async def test_tls_files_are_checked_at_start(server_factory, certs, tmp_path):
    with pytest.raises(ConfigError, match="not a PEM"):
        (tmp_path / "x.pem").write_text("nope")
        await server_factory(tls_cert=str(tmp_path / "x.pem"), tls_key=str(certs.server_key))
    other = write_dev_certs(tmp_path / "o")
    with pytest.raises(ConfigError, match="tls_key"):
        await server_factory(tls_cert=str(certs.server_cert), tls_key=str(other.server_key))


async def test_health_port_answers_plaintext_health_only(server_factory, certs):
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from stylecast.v1 import stylecast_pb2 as pb
    from stylecast.v1 import stylecast_pb2_grpc as pb_grpc
    from test_metrics import free_port

    server = await server_factory(tls_cert=str(certs.server_cert), tls_key=str(certs.server_key),
                                  health_port=free_port(), host="localhost")
    async with grpc.aio.insecure_channel(f"localhost:{server.health_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service="stylecast.v1.StyleTransfer"))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await pb_grpc.StyleTransferStub(channel).GetStyle(pb.GetStyleRequest(id="x"))
        assert exc.value.code() == grpc.StatusCode.UNIMPLEMENTED
