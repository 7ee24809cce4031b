"""Server lifecycle: health, reflection, admission limits, shutdown, durability, no TensorFlow."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading

import grpc
import pytest
from conftest import encoded, make_config, picture, raw_image, register
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from google.rpc import error_details_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from grpc_status import rpc_status

from stylecast.client import AsyncClient
from stylecast.client.errors import NotFound, ResourceExhausted, Unavailable, from_rpc_error
from stylecast.server.app import start
from stylecast.server.config import ConfigError
from stylecast.v1 import stylecast_pb2 as pb
from stylecast.v1 import stylecast_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration


async def test_reflection_lists_services_like_grpcurl_and_health_serves(server):
    def reflect() -> tuple[list[str], list[str]]:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            db = ProtoReflectionDescriptorDatabase(channel)
            service = DescriptorPool(db).FindServiceByName("stylecast.v1.StyleTransfer")
            return db.get_services(), [m.name for m in service.methods]

    services, methods = await asyncio.to_thread(reflect)
    assert {"stylecast.v1.StyleTransfer", "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection"} <= set(services)
    assert {"Stylize", "StylizeImage", "RegisterStyle", "SearchStyles"} <= set(methods)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", "stylecast.v1.StyleTransfer"):
            res = await health.Check(health_pb2.HealthCheckRequest(service=name))
            assert res.status == health_pb2.HealthCheckResponse.SERVING


async def refused_at_admission(stub) -> None:
    """Open a Stylize stream the server refuses before reading it (max_streams) and read its status.
    It writes nothing: grpcio's client reports INTERNAL ("Internal error from Core") instead of the
    server's status when a write is in flight as the call ends (grpc/grpc#36066)."""
    await stub.Stylize().read()


async def test_stream_limit_refuses_with_resource_exhausted_but_never_health(server_factory):
    server = await server_factory(max_streams=1)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.StyleTransferStub(channel)
        style = await register(stub, picture(64, 64))
        hold = asyncio.Event()

        async def held():
            yield pb.StylizeRequest(config=pb.StreamConfig(style_id=style.id))
            yield pb.StylizeRequest(frame=pb.Frame(id=1, image=raw_image(picture(16, 16))))
            await hold.wait()

        first = stub.Stylize(held())
        assert (await first.read()).frame.id == 1  # the first stream is running

        async def second():
            yield pb.StylizeRequest(config=pb.StreamConfig(style_id=style.id))

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await refused_at_admission(stub)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_streams" in err.value.details()
        health = health_pb2_grpc.HealthStub(channel)
        assert (await health.Check(health_pb2.HealthCheckRequest())).status == health_pb2.HealthCheckResponse.SERVING
        assert (await stub.GetStyle(pb.GetStyleRequest(id=style.id))).id == style.id
        hold.set()
        assert await first.read() == grpc.aio.EOF
        assert [r async for r in stub.Stylize(second())] == []  # the slot is free again


async def test_while_shutting_down_new_calls_are_unavailable_but_health_answers(server, stub):
    style = await register(stub, picture(64, 64))
    server.shutdown.set()  # the state stop() enters before draining
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetStyle(pb.GetStyleRequest(id=style.id))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "shutting down" in err.value.details()
    await server.health.enter_graceful_shutdown()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        res = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert res.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_refusals_carry_rich_status_details_the_client_reads_as_fields(server_factory):
    """ErrorInfo (reason), RetryInfo (retry advice) and QuotaFailure (which limit) in the
    grpc-status-details-bin trailer, for unary and streaming calls alike."""
    server = await server_factory(max_streams=1)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.StyleTransferStub(channel)
        style = await register(stub, picture(64, 64))
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.GetStyle(pb.GetStyleRequest(id="no-such-style"))
        hold = asyncio.Event()

        async def held():
            yield pb.StylizeRequest(config=pb.StreamConfig(style_id=style.id))
            yield pb.StylizeRequest(frame=pb.Frame(id=1, image=raw_image(picture(16, 16))))
            await hold.wait()

        first = stub.Stylize(held())
        assert (await first.read()).frame.id == 1  # the first stream holds the only slot
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await refused_at_admission(stub)
        hold.set()
        assert await first.read() == grpc.aio.EOF
        server.shutdown.set()
        with pytest.raises(grpc.aio.AioRpcError) as closing:
            await stub.GetStyle(pb.GetStyleRequest(id=style.id))

    not_found = from_rpc_error(missing.value)
    assert (type(not_found), not_found.reason, not_found.retry_after_s) == (NotFound, "NOT_FOUND", None)
    limit = from_rpc_error(refused.value)
    assert (type(limit), limit.reason, limit.retry_after_s) == (ResourceExhausted, "RESOURCE_EXHAUSTED", 1.0)
    status = rpc_status.from_call(refused.value)
    quota = error_details_pb2.QuotaFailure()
    assert any(d.Unpack(quota) for d in status.details)
    assert quota.violations[0].subject == "/stylecast.v1.StyleTransfer/Stylize"
    assert "max_streams" in quota.violations[0].description
    draining = from_rpc_error(closing.value)
    assert (type(draining), draining.reason, draining.retry_after_s) == (Unavailable, "SHUTTING_DOWN", 1.0)


async def test_health_watch_ends_once_not_serving_is_sent_so_stop_skips_the_grace(server_factory):
    """Clients with client-side health checking hold a Watch stream: at shutdown it gets NOT_SERVING
    and ends, instead of holding ``stop`` for the whole grace period (120 s here)."""
    server = await server_factory()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service="stylecast.v1.StyleTransfer"))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        stopping = asyncio.ensure_future(server.stop(120.0))
        assert (await asyncio.wait_for(watch.read(), 60)).status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert await asyncio.wait_for(watch.read(), 60) == grpc.aio.EOF
        assert await watch.code() == grpc.StatusCode.OK
        await asyncio.wait_for(stopping, 60)  # far inside the grace: nothing else was running


# ------------------------------------------------------------ subprocess server

SERVE = """
import json, sys
from stylecast.server.app import main
main(json.loads(sys.argv[1]))
print(json.dumps({"tensorflow": "tensorflow" in sys.modules, "litert": "ai_edge_litert" in sys.modules}), flush=True)
"""


class ServerProcess:
    """``stylecast.server.app.main`` in a subprocess; the bound port is read from its log."""

    def __init__(self, flags: dict) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STYLECAST_")}
        self.proc = subprocess.Popen([sys.executable, "-c", SERVE, json.dumps(flags)], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)
        self.log: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        self.port = self._wait_port()

    def _pump(self) -> None:
        for line in self.proc.stderr:
            self.stderr.append(line)
            self.log.put(line)

    def _wait_port(self) -> int:
        while True:
            try:
                line = self.log.get(timeout=120)
            except queue.Empty:
                raise AssertionError("server did not start:\n" + "".join(self.stderr)) from None
            if m := re.search(r"stylecast serving .* on .*:(\d+)$", line.strip()):
                return int(m.group(1))

    def finish(self) -> dict:
        out, _ = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0, "".join(self.stderr)
        return json.loads(out.strip().splitlines()[-1])


def serve_flags(tiny_models_dir, db) -> dict:
    return {"port": 0, "host": "127.0.0.1", "metrics_port": 0, "backend": "litert", "format": "tflite-fp32",
            "models_dir": str(tiny_models_dir), "style_store": f"sqlite:///{db}", "workers": 2, "threads": 1,
            # no 256² warm-up: the first 256² frame then takes long enough for all four to be read
            "warmup_sizes": ""}


async def test_sigterm_answers_in_flight_frames_then_unavailable_without_tensorflow(tiny_models_dir, tmp_path):
    proc = await asyncio.to_thread(ServerProcess, serve_flags(tiny_models_dir, tmp_path / "s.db"))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{proc.port}") as channel:
            stub = pb_grpc.StyleTransferStub(channel)
            style = await register(stub, picture(64, 64))
            call = stub.Stylize()
            # Every write is out before SIGTERM: grpcio's client reports INTERNAL ("Internal error
            # from Core") instead of the server's status when a write is still in flight as the
            # call ends (grpc/grpc#36066), which is not what this test is about.
            await call.write(pb.StylizeRequest(config=pb.StreamConfig(style_id=style.id)))
            for i in range(4):
                # small JPEGs (36 kB in all, within HTTP/2's first window): every write completes at once
                await call.write(pb.StylizeRequest(frame=pb.Frame(id=i, image=pb.Image(data=encoded(
                    picture(256, 256, seed=i), "JPEG")))))
            assert (await call.read()).frame.id == 0
            proc.proc.send_signal(signal.SIGTERM)
            answered = []
            with pytest.raises(grpc.aio.AioRpcError) as err:
                while True:
                    answered.append((await call.read()).frame.id)
        # Every frame the server had read when SIGTERM came is answered, in order, with no gap;
        # usually all three (they are read long before the first answer), but a frame still in
        # the client's send buffer is never read, so a shorter prefix is correct too. Frame 1 was
        # out before frame 0 was answered, so at least it was read: an empty answer is a failure.
        assert answered == list(range(1, len(answered) + 1)) and 1 <= len(answered) <= 3, answered
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "shutting down" in err.value.details()
        modules = await asyncio.to_thread(proc.finish)
        assert modules == {"tensorflow": False, "litert": True}
    finally:
        proc.proc.kill()


async def test_acknowledged_style_survives_kill_9_and_restart(tiny_models_dir, tmp_path):
    flags = serve_flags(tiny_models_dir, tmp_path / "durable.db")
    first = await asyncio.to_thread(ServerProcess, flags)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{first.port}") as channel:
            style = await register(pb_grpc.StyleTransferStub(channel), picture(96, 64, seed=50), name="kept")
        first.proc.send_signal(signal.SIGKILL)  # no chance to flush anything after the ack
        first.proc.wait(timeout=30)
    finally:
        first.proc.kill()
    second = await asyncio.to_thread(ServerProcess, flags)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{second.port}") as channel:
            stub = pb_grpc.StyleTransferStub(channel)
            got = await stub.GetStyle(pb.GetStyleRequest(id=style.id))
            assert (got.name, got.model_versions) == ("kept", ["tiny:1"])
            res = await stub.StylizeImage(pb.StylizeImageRequest(
                config=pb.StreamConfig(style_id=style.id), image=raw_image(picture(32, 32))))
            assert res.result.image.width == 32
        second.proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(second.finish)
    finally:
        second.proc.kill()


async def test_a_style_store_that_cannot_be_opened_is_a_config_error_before_serving(tiny_models_dir, tmp_path):
    """``--style-store`` under a regular file (or any path SQLite cannot create): ``stylecast serve``
    prints the store and what to do instead of a traceback."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store's folder should be")
    store = blocker / "styles.db"
    with pytest.raises(ConfigError, match=f"style_store sqlite:///{store}: cannot open it .*choose a writable path"):
        await start(make_config(tiny_models_dir, tmp_path, style_store=f"sqlite:///{store}"))
    assert blocker.read_text() == "a file where the store's folder should be"


async def test_the_sdk_keeps_the_servers_retry_advice_when_it_is_shutting_down(server):
    """An UNAVAILABLE the server sent (ErrorInfo SHUTTING_DOWN, RetryInfo 1 s) reaches the SDK's
    caller with its reason and retry advice, without the connection hints meant for no answer."""
    async with AsyncClient(f"127.0.0.1:{server.port}") as client:
        style = await client.register_style(picture(64, 64))
        server.shutdown.set()  # the state stop() enters before draining
        with pytest.raises(Unavailable) as err:
            await client.get_style(style.id)
    assert err.value.reason == "SHUTTING_DOWN" and err.value.retry_after_s == pytest.approx(1.0)
    assert "shutting down" in err.value.details and "plaintext" not in err.value.details
