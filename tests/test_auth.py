"""Bearer tokens and roles: every RPC the server lists through reflection is refused without a
token (UNAUTHENTICATED) and with a token lacking its role (PERMISSION_DENIED); per-token limits,
the token metrics label, SIGHUP reloads, safe listening defaults and ``stylecast token new``."""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path

import grpc
import pytest
from conftest import picture, raw_image, register
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from google.protobuf.descriptor_pool import DescriptorPool
from typer.testing import CliRunner

from stylecast.client import AsyncClient, PermissionDenied, Unauthenticated
from stylecast.client.cli import app
from stylecast.server.auth import ANY_TOKEN, METHOD_ROLES, ROLES, Authenticator, parse_tokens, token_digest, tokens_entry
from stylecast.server.config import ConfigError, ServerConfig
from stylecast.v1 import stylecast_pb2 as pb
from stylecast.v1 import stylecast_pb2_grpc as pb_grpc

OPEN_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection")


def tokens_file(path: Path, tokens: dict[str, tuple[str, ...]], **limits: dict[str, int]) -> Path:
    """A tokens file where token ``tok-NAME`` has ``roles``; returns its path."""
    text = ""
    for name, roles in tokens.items():
        text += tokens_entry(name, roles, f"tok-{name}")
        for key, value in limits.get(name, {}).items():
            text += f"{key} = {value}\n"
    path.write_text(text)
    return path


# every role but one, so a call can lack exactly the role its method needs
LACKING = {role: tuple(r for r in ROLES if r != role) for role in ROLES}


@pytest.fixture
async def secured(server_factory, tmp_path):
    path = tokens_file(tmp_path / "tokens.toml", {"all": ROLES} | {f"no-{r}": LACKING[r] for r in ROLES})
    return await server_factory(tokens_file=str(path))


def served_methods(port: int) -> list[tuple[str, object]]:
    """(full method path, method descriptor) of every service the server lists through reflection."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        db = ProtoReflectionDescriptorDatabase(channel)
        pool = DescriptorPool(db)
        out = []
        for service in db.get_services():
            desc = pool.FindServiceByName(service)
            out += [(f"/{service}/{m.name}", m) for m in desc.methods]
    return out


async def call_raw(channel: grpc.aio.Channel, path: str, method, metadata) -> grpc.StatusCode:
    """Call ``path`` with an empty request (no message on a client stream: a write racing the server's
    refusal makes grpcio's asyncio client report INTERNAL instead of the server's status, grpc/grpc#36066)
    and return its status."""
    kind = (method.client_streaming, method.server_streaming)
    factory = {(False, False): channel.unary_unary, (False, True): channel.unary_stream,
               (True, False): channel.stream_unary, (True, True): channel.stream_stream}[kind]
    call = factory(path)  # no (de)serializers: raw bytes
    request = iter([]) if method.client_streaming else b""
    try:
        result = call(request, metadata=metadata, timeout=10)
        if method.server_streaming:
            async for _ in result:
                pass
        else:
            await result
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_every_rpc_listed_by_reflection_needs_a_token_and_its_role(secured):
    methods = await asyncio.to_thread(served_methods, secured.port)
    services = {p.split("/")[1] for p, _ in methods}
    assert {"stylecast.v1.StyleTransfer", "stylecast.v1.ModelAdmin"} <= services  # admin on the main port
    guarded = [(p, m) for p, m in methods if p.split("/")[1] not in OPEN_SERVICES]
    assert {p for p, _ in guarded} == set(METHOD_ROLES), "a served method has no role, or a role no method"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{secured.port}") as channel:
        seen, open_to_any = {}, {}
        for path, method in guarded:
            role = METHOD_ROLES[path]
            refused = (await call_raw(channel, path, method, None),
                       await call_raw(channel, path, method, (("authorization", "Bearer not-a-token"),)))
            if role == ANY_TOKEN:   # no role to lack: any valid token passes authentication
                open_to_any[path] = refused + (await call_raw(channel, path, method, (("authorization",
                                                                                       "Bearer tok-no-admin"),)),)
            else:
                seen[path] = refused + (await call_raw(channel, path, method,
                                                       (("authorization", f"Bearer tok-no-{role}"),)),)
        assert seen and all(codes == (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNAUTHENTICATED,
                                      grpc.StatusCode.PERMISSION_DENIED) for codes in seen.values()), seen
        for path, codes in open_to_any.items():
            assert codes[:2] == (grpc.StatusCode.UNAUTHENTICATED,) * 2, (path, codes)
            assert codes[2] not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED), (path, codes)
        # health and reflection stay open
        health = health_pb2_grpc.HealthStub(channel)
        assert (await health.Check(health_pb2.HealthCheckRequest())).status == health_pb2.HealthCheckResponse.SERVING


async def test_a_token_with_the_role_is_served_and_messages_reveal_no_tokens(secured):
    target = f"127.0.0.1:{secured.port}"
    async with AsyncClient(target, token="tok-all") as client:
        style = await client.register_style(picture(64, 64, seed=3), name="ok")
        result = await client.stylize(picture(40, 30), style.id, output="raw")
        assert (result.width, result.height) == (40, 30)
        assert [m.name for m in await client.list_models()] == ["tiny"]
    errors = []
    for token in (None, "tok-nobody", "tok-all" + "x"):
        async with AsyncClient(target, token=token) as client:
            with pytest.raises(Unauthenticated) as exc:
                await client.get_style(style.id)
            errors.append(exc.value.details)
    assert len(set(errors)) == 1 and "tok-" not in errors[0]  # the same words whatever was sent
    async with AsyncClient(target, token="tok-no-styles") as client:
        with pytest.raises(PermissionDenied, match="'styles'"):
            await client.delete_style(style.id)
        assert (await client.get_style(style.id)).id == style.id  # the style survived


async def test_per_token_stream_limit_and_token_metrics_label(server_factory, tmp_path):
    path = tokens_file(tmp_path / "t.toml", {"cam": ("stylize", "styles"), "other": ("stylize",)},
                       cam={"max_streams": 1})
    server = await server_factory(tokens_file=str(path))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.StyleTransferStub(channel)
        style = await register(stub, picture(64, 64), metadata=(("authorization", "Bearer tok-cam"),))
        first = stub.Stylize(metadata=(("authorization", "Bearer tok-cam"),))
        await first.write(pb.StylizeRequest(config=pb.StreamConfig(style_id=style.id)))
        await first.write(pb.StylizeRequest(frame=pb.Frame(id=1, image=raw_image(picture(16, 16)))))
        assert (await first.read()).WhichOneof("msg") == "frame"
        second = stub.Stylize(metadata=(("authorization", "Bearer tok-cam"),))
        await second.write(pb.StylizeRequest(config=pb.StreamConfig(style_id=style.id)))
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await second.read()
        assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_streams" in exc.value.details()
        # another token is not limited by cam's streams
        third = stub.Stylize(metadata=(("authorization", "Bearer tok-other"),))
        await third.write(pb.StylizeRequest(config=pb.StreamConfig(style_id=style.id)))
        await third.write(pb.StylizeRequest(frame=pb.Frame(id=1, image=raw_image(picture(16, 16)))))
        assert (await third.read()).WhichOneof("msg") == "frame"
        for call in (first, third):
            await call.done_writing()
            assert await call.read() is grpc.aio.EOF
    labels = {tuple(sorted(s.labels.items())) for m in server.engine.metrics.registry.collect()
              if m.name == "stylecast_stream_duration_seconds" for s in m.samples if s.name.endswith("_count")}
    tokens = {dict(lbl)["token"] for lbl in labels}
    assert tokens == {"cam", "other"}


async def test_sighup_reload_revokes_and_adds_tokens_without_dropping_streams(server_factory, tmp_path):
    path = tokens_file(tmp_path / "t.toml", {"old": ("stylize", "styles")})
    server = await server_factory(tokens_file=str(path))
    target = f"127.0.0.1:{server.port}"
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.StyleTransferStub(channel)
        style = await register(stub, picture(64, 64), metadata=(("authorization", "Bearer tok-old"),))
        stream = stub.Stylize(metadata=(("authorization", "Bearer tok-old"),))
        await stream.write(pb.StylizeRequest(config=pb.StreamConfig(style_id=style.id)))
        await stream.write(pb.StylizeRequest(frame=pb.Frame(id=1, image=raw_image(picture(16, 16)))))
        assert (await stream.read()).frame.id == 1

        tokens_file(path, {"new": ("stylize",)})
        assert server.reload_tokens()  # what SIGHUP runs (serve() installs the handler)
        await stream.write(pb.StylizeRequest(frame=pb.Frame(id=2, image=raw_image(picture(16, 16)))))
        assert (await stream.read()).frame.id == 2  # the open stream goes on
        await stream.done_writing()
        assert await stream.read() is grpc.aio.EOF

        path.write_text("[[tokens]]\nname = 'broken'\n")  # a bad file keeps the previous tokens
        assert not server.reload_tokens()
    async with AsyncClient(target, token="tok-old") as client:
        with pytest.raises(Unauthenticated):
            await client.get_style(style.id)
    async with AsyncClient(target, token="tok-new") as client:
        assert (await client.get_style(style.id)).id == style.id


def test_tokens_file_errors_name_the_entry_and_never_hold_plaintext(tmp_path):
    good = tokens_entry("cam-1", ("stylize",), "secret-token")
    assert "secret-token" not in good and token_digest("secret-token") in good
    (entry,) = parse_tokens(good)
    assert entry.name == "cam-1" and entry.roles == {"stylize"}
    bad = {
        good + good: "used twice",
        good.replace("stylize", "root"): "roles must be",
        good.replace("cam-1", "../x"): "name must be",
        good.replace("cam-1", "anonymous"): "name must be",
        good + "max_streams = -1\n": "max_streams",
        good + "color = 1\n": "unknown keys",
        '[[tokens]]\nname = "a"\nroles = ["admin"]\nsha256 = "abc"\n': "64 hex",
        "tokens = 3\n": "only [[tokens]]",
        "[[tokens]\n": "tokens file",
    }
    for text, words in bad.items():
        with pytest.raises(ConfigError, match=re.escape(words)):
            parse_tokens(text)
    with pytest.raises(ConfigError, match="No such file"):
        Authenticator(tmp_path / "missing.toml")


def test_no_tokens_file_means_loopback_and_other_addresses_need_an_explicit_flag(tmp_path):
    assert ServerConfig().host == "localhost" and ServerConfig().loopback
    with pytest.raises(ConfigError, match="allow-unauthenticated"):
        ServerConfig(host="0.0.0.0")
    assert not ServerConfig(host="0.0.0.0", allow_unauthenticated=True).admin_on_main_port
    secured = ServerConfig(tokens_file=str(tmp_path / "t.toml"))
    assert secured.host == "[::]" and secured.admin_on_main_port
    with pytest.raises(ConfigError, match="tls_cert and tls_key"):
        ServerConfig(tls_cert="a.pem")


def test_token_new_prints_a_token_once_and_the_entry_that_accepts_it():
    result = CliRunner().invoke(app, ["token", "new", "--name", "cam-2", "--roles", "stylize,styles"])
    assert result.exit_code == 0, result.output
    token = result.stderr.splitlines()[1]
    entry = result.stdout  # alone on stdout: `stylecast token new ... >> tokens.toml` appends just the entry
    (parsed,) = parse_tokens(entry)
    assert parsed.name == "cam-2" and parsed.roles == {"stylize", "styles"}
    assert parsed.digest.hex() == token_digest(token) and len(token) >= 40
    again = CliRunner().invoke(app, ["token", "new", "--name", "cam-2"]).stderr.splitlines()[1]
    assert again != token
    bad = CliRunner().invoke(app, ["token", "new", "--name", "x", "--roles", "root"])
    assert bad.exit_code == 1 and "roles must be" in bad.output


async def test_sighup_to_a_served_process_reloads_tokens(tiny_models_dir, tmp_path):
    from test_server_lifecycle import ServerProcess, serve_flags

    path = tokens_file(tmp_path / "t.toml", {"a": ("stylize",)})
    flags = serve_flags(tiny_models_dir, tmp_path / "s.db") | {"tokens_file": str(path)}
    proc = await asyncio.to_thread(ServerProcess, flags)
    try:
        target = f"127.0.0.1:{proc.port}"
        async with AsyncClient(target, token="tok-b") as client:
            with pytest.raises(Unauthenticated):
                await client.get_style("x" * 64)
        tokens_file(path, {"b": ("stylize",)})
        proc.proc.send_signal(signal.SIGHUP)
        await asyncio.to_thread(lambda: next(line for line in iter(proc.log.get, None) if "tokens reloaded" in line))
        async with AsyncClient(target, token="tok-b") as client:
            with pytest.raises(Exception) as exc:
                await client.get_style("x" * 64)
            assert type(exc.value).__name__ == "NotFound"  # past authentication
    finally:
        proc.proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.finish)
