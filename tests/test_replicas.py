"""Several replicas sharing one real redis-server: real `stylecast serve` processes, the SDK's
round_robin + client-side health checking + retry policy, stream failover, and a Redis outage."""

from __future__ import annotations

import asyncio
import signal

import grpc
import pytest
import numpy as np
from conftest import RedisProcess, free_port, make_config, picture, redis_server_or_skip
from grpc_health.v1 import health_pb2
from test_server_lifecycle import ServerProcess, serve_flags

from stylecast.client.aio import AsyncClient
from stylecast.client.errors import NotFound, Unavailable
from stylecast.server.app import start
from stylecast.server.redis_store import RedisStyleStore
from stylecast.v1 import stylecast_pb2 as pb
from stylecast.v1 import stylecast_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration
SERVICE = "/stylecast.v1.StyleTransfer/"


def calls(server, method: str, code: str = "OK") -> float:
    """Calls of ``method`` that ``server`` finished with ``code`` (its own metrics)."""
    return server.engine.metrics.registry.get_sample_value(
        "stylecast_rpc_duration_seconds_count", {"method": SERVICE + method, "code": code, "token": "anonymous"}) or 0.0


def open_streams(server) -> float:
    return server.engine.metrics.registry.get_sample_value(
        "stylecast_active_streams", {"method": SERVICE + "Stylize"}) or 0.0


async def test_two_serve_processes_share_styles_through_redis(tiny_models_dir, tmp_path, redis_url):
    flags = serve_flags(tiny_models_dir, tmp_path / "unused.db") | {"style_store": redis_url}
    a, b = await asyncio.gather(asyncio.to_thread(ServerProcess, flags), asyncio.to_thread(ServerProcess, flags))
    try:
        async with AsyncClient(f"127.0.0.1:{a.port}") as on_a, AsyncClient(f"127.0.0.1:{b.port}") as on_b:
            style = await on_a.register_style(picture(64, 64, seed=70), name="shared")
            assert style.created and style.model_versions == ("tiny:1",)
            again = await on_b.register_style(picture(64, 64, seed=70), name="other")
            assert not again.created and again.name == "shared"      # one library, first writer wins
            frames = [picture(48, 32, seed=i) for i in range(3)]
            results = [r async for r in on_b.stream(frames, style.id, output="raw")]
            assert [(r.id, r.status, r.width, r.height) for r in results] == [(i, "ok", 48, 32) for i in range(3)]
            assert [s.id async for s in on_a.list_styles()] == [style.id]
            assert await on_b.delete_style(style.id)
            with pytest.raises(NotFound):
                await on_a.get_style(style.id)
            with pytest.raises(NotFound):       # A registered it, B deleted it: A must not use it
                await on_a.stylize(frames[0], style.id)
            with pytest.raises(NotFound):
                [r async for r in on_a.stream(frames, style.id)]
            assert [s async for s in on_a.list_styles()] == []
        for proc in (a, b):
            proc.proc.send_signal(signal.SIGTERM)
        await asyncio.gather(asyncio.to_thread(a.finish), asyncio.to_thread(b.finish))
    finally:
        a.proc.kill()
        b.proc.kill()


async def test_a_stream_survives_its_serve_processes_drained_and_killed(tiny_models_dir, tmp_path, redis_url):
    """Real processes on fixed ports: A gets SIGTERM and a new process, then B gets SIGKILL and a new
    process; whichever served the stream, it moved at least once and lost nothing."""
    flags = serve_flags(tiny_models_dir, tmp_path / "unused.db") | {"style_store": redis_url}
    ports = [free_port(), free_port()]
    procs = list(await asyncio.gather(*(asyncio.to_thread(ServerProcess, flags | {"port": p}) for p in ports)))
    try:
        async with AsyncClient(f"ipv4:127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}") as client:
            style = await client.register_style(picture(40, 40, seed=8))
            answered = {n: asyncio.Event() for n in (10, 40)}
            restarted = [asyncio.Event(), asyncio.Event()]

            async def source():
                for i in range(70):
                    if i in (30, 60):                 # keep the stream going through each restart
                        await restarted[i // 30 - 1].wait()
                    await asyncio.sleep(0.02)
                    yield picture(48, 32, seed=i)

            async def restarts():
                for i, (sig, after) in enumerate(((signal.SIGTERM, 10), (signal.SIGKILL, 40))):
                    await answered[after].wait()
                    procs[i].proc.send_signal(sig)
                    await asyncio.to_thread(procs[i].proc.wait, 60)
                    procs[i] = await asyncio.to_thread(ServerProcess, flags | {"port": ports[i]})
                    restarted[i].set()

            restarter = asyncio.create_task(restarts())
            results = []
            async for r in client.stream(source(), style, output="raw", max_in_flight=4):
                results.append(r)
                if len(results) in answered:
                    answered[len(results)].set()
            await restarter
        assert [r.id for r in results] == list(range(70))
        assert all(r.ok for r in results)
    finally:
        for proc in procs:
            proc.proc.kill()


async def test_round_robin_spreads_calls_and_health_checks_steer_around_a_draining_replica(
        server_factory, redis_url):
    a, b = await server_factory(style_store=redis_url), await server_factory(style_store=redis_url)
    async with AsyncClient(f"ipv4:127.0.0.1:{a.port},127.0.0.1:{b.port}") as client:
        await client.wait_ready()
        style = await client.register_style(picture(40, 40, seed=3))
        for _ in range(12):
            await client.get_style(style.id)
        assert calls(a, "GetStyle") >= 3 and calls(b, "GetStyle") >= 3, (calls(a, "GetStyle"), calls(b, "GetStyle"))
        await a.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)   # what a drain does first
        only_b = 0
        for _ in range(400):       # the health Watch update reaches the client within a few calls
            before = calls(a, "GetStyle")
            await client.get_style(style.id)
            only_b = only_b + 1 if calls(a, "GetStyle") == before else 0
            if only_b == 20:
                break
        assert only_b == 20, "calls still reach the NOT_SERVING replica"
        await a.health.set("", health_pb2.HealthCheckResponse.SERVING)


async def drain_under_stream(server_factory, redis_url, *, failover: bool, frames: int = 30):
    """A stream over two replicas; the one serving it drains after frame 5 is answered."""
    a, b = await server_factory(style_store=redis_url), await server_factory(style_store=redis_url)
    async with AsyncClient(f"ipv4:127.0.0.1:{a.port},127.0.0.1:{b.port}") as client:
        style = await client.register_style(picture(40, 40, seed=4))
        drained = asyncio.Event()

        async def source():
            for i in range(frames):
                if i == 12:
                    await drained.wait()   # frames 6..11 are in flight or unsent when the drain starts
                yield picture(48, 32, seed=i)

        results, stopping = [], None
        try:
            async for r in client.stream(source(), style, output="raw", max_in_flight=4, failover=failover):
                results.append(r)
                if r.id == 5:
                    serving = a if open_streams(a) else b
                    assert open_streams(serving) == 1
                    stopping = asyncio.create_task(serving.stop(5.0))
                    drained.set()
        finally:
            if stopping is not None:
                await stopping
    return results


async def test_stream_fails_over_to_another_replica_when_its_replica_drains(server_factory, redis_url):
    results = await drain_under_stream(server_factory, redis_url, failover=True)
    assert [r.id for r in results] == list(range(30))      # each frame answered once, in order
    assert all(r.ok and (r.width, r.height) == (48, 32) for r in results)


async def test_a_stream_whose_replica_drains_before_its_first_frame_resumes_elsewhere(server_factory, redis_url):
    """The call carried only its StreamConfig when its replica began shutting down: the replica said
    SHUTTING_DOWN, so the stream resumes on the other one (not refused like an address with no server)."""
    a, b = await server_factory(style_store=redis_url), await server_factory(style_store=redis_url)
    async with AsyncClient(f"ipv4:127.0.0.1:{a.port},127.0.0.1:{b.port}") as client:
        style = await client.register_style(picture(40, 40, seed=5))
        served = []

        async def source():
            for _ in range(200):   # until the call is open on a replica
                if open_streams(a) or open_streams(b):
                    break
                await asyncio.sleep(0.02)
            served.append(a if open_streams(a) else b)
            await asyncio.wait_for(served[0].stop(5.0), 10)   # that call ends before any frame was sent
            for i in range(3):
                yield picture(48, 32, seed=i)

        results = [r async for r in client.stream(source(), style, output="raw", max_in_flight=2)]
    assert [r.id for r in results] == [0, 1, 2] and all(r.ok for r in results)
    drained, other = (a, b) if served[0] is a else (b, a)
    assert streams(drained, "UNAVAILABLE") == 1 and streams(other) == 1   # ended by the drain; resumed on the other


async def test_stream_failover_can_be_turned_off(server_factory, redis_url):
    with pytest.raises(Unavailable, match="shutting down|went away"):
        await drain_under_stream(server_factory, redis_url, failover=False)


async def test_redis_outage_is_unavailable_with_retries_and_the_server_recovers(server_factory, tmp_path):
    redis_server_or_skip()
    redis = RedisProcess(tmp_path / "redis").start()
    try:
        server = await server_factory(style_store=redis.url)
        async with AsyncClient(f"127.0.0.1:{server.port}") as client:
            style = await client.register_style(picture(40, 40, seed=5), name="durable")
            outage = asyncio.Event()
            restarted = asyncio.Event()

            async def source():
                for i in range(12):
                    if i == 4:
                        await outage.wait()
                    if i == 8:
                        await restarted.wait()
                    yield picture(48, 32, seed=i)

            results = []
            async for r in client.stream(source(), style, output="raw"):
                results.append(r)
                if r.id == 2:
                    await asyncio.to_thread(redis.kill)
                    with pytest.raises(Unavailable, match="retry") as err:
                        await client.get_style(style.id)
                    assert "style store" in err.value.details
                    # the channel's retry policy tried 4 times before giving up (server-side count,
                    # recorded after each status is out: the client can see the last one first),
                    # each answer carrying gRPC's retry pushback (how long to wait before the next)
                    for _ in range(100):
                        if calls(server, "GetStyle", "UNAVAILABLE") >= 4:
                            break
                        await asyncio.sleep(0.1)
                    assert calls(server, "GetStyle", "UNAVAILABLE") == 4
                    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as plain:
                        with pytest.raises(grpc.aio.AioRpcError) as raw:
                            await pb_grpc.StyleTransferStub(plain).GetStyle(pb.GetStyleRequest(id=style.id))
                    assert raw.value.code() == grpc.StatusCode.UNAVAILABLE
                    assert ("grpc-retry-pushback-ms", "1000") in tuple(raw.value.trailing_metadata())
                    with pytest.raises(Unavailable):     # a new stream cannot look its style up
                        [x async for x in client.stream([picture(16, 16)], style)]
                    outage.set()                        # this stream holds its vector: it goes on
                if r.id == 6:
                    await asyncio.to_thread(redis.start)   # same port, same AOF
                    restarted.set()
            assert [(r.id, r.status) for r in results] == [(i, "ok") for i in range(12)]
            # recovered without a server restart; the acknowledged style survived (AOF, fsync always)
            assert (await client.get_style(style.id)).name == "durable"
            assert calls(server, "GetStyle", "OK") >= 1
    finally:
        redis.kill()


async def test_replicas_loading_a_new_version_compute_only_the_missing_vectors(server_factory, tiny_v2_dir,
                                                                               redis_url, tmp_path):
    v1 = await server_factory(style_store=redis_url)
    async with AsyncClient(f"127.0.0.1:{v1.port}") as client:
        styles = [await client.register_style(picture(40, 40, seed=20 + i)) for i in range(3)]
    store = RedisStyleStore(redis_url)
    await store.open()
    try:
        dim = (await store.vector(styles[0].id, "tiny", "1")).shape[0]
        marker = np.full(dim, 7.0, np.float32)
        await store.put_vector(styles[0].id, "tiny", "2", marker)     # already there for version 2
        # two replicas of the new version start at once over the same store
        v2 = await asyncio.gather(*(start(make_config(tiny_v2_dir, tmp_path / str(i), style_store=redis_url))
                                    for i in range(2)))
        await asyncio.gather(*(s.stop(1.0) for s in v2))
        np.testing.assert_array_equal(await store.vector(styles[0].id, "tiny", "2"), marker)  # not recomputed
        for style in styles[1:]:
            vec = await store.vector(style.id, "tiny", "2")
            assert vec is not None and vec.shape == (dim,) and not np.array_equal(vec, marker)
            assert not np.array_equal(vec, await store.vector(style.id, "tiny", "1"))  # its own model's vector
            assert (await store.get(style.id)).model_versions == ("tiny:1", "tiny:2")
        assert await store.missing_vectors("tiny", "2") == []
    finally:
        await store.close()


async def test_failover_resends_the_config_in_force_for_each_unanswered_frame(server_factory, redis_url):
    """A style switch mid-stream, then a drain: after the resume every frame is still stylized with
    the style in force when it was sent (compared with each style's own answer for that frame)."""
    from stylecast.client.messages import StreamOptions

    a, b = await server_factory(style_store=redis_url), await server_factory(style_store=redis_url)
    async with AsyncClient(f"ipv4:127.0.0.1:{a.port},127.0.0.1:{b.port}") as client:
        first = await client.register_style(picture(40, 40, seed=11))
        second = await client.register_style(picture(40, 40, seed=12))
        frame = picture(64, 48, seed=13)
        expected = {s.id: (await client.stylize(frame, s, output="raw")).data for s in (first, second)}
        assert expected[first.id] != expected[second.id]
        stopping = []

        async def source():
            for i in range(16):
                if i == 6:
                    yield StreamOptions(second, output="raw")
                if i == 9:   # frames of both styles are sent; most are still unanswered
                    serving = a if open_streams(a) else b
                    stopping.append(asyncio.create_task(serving.stop(5.0)))
                yield frame

        results = [r async for r in client.stream(source(), first, output="raw", max_in_flight=16)]
        await asyncio.gather(*stopping)
    assert [r.id for r in results] == list(range(16))
    styles = [first.id] * 6 + [second.id] * 10
    assert [r.data == expected[s] for r, s in zip(results, styles)] == [True] * 16


async def test_cli_takes_a_multi_replica_target(server_factory, redis_url, tmp_path):
    from conftest import encoded
    from test_cli import stylecast

    a, b = await server_factory(style_store=redis_url), await server_factory(style_store=redis_url)
    target = f"ipv4:127.0.0.1:{a.port},127.0.0.1:{b.port}"
    style = tmp_path / "style.png"
    style.write_bytes(encoded(picture(60, 60, seed=30)))
    code, out = await stylecast("styles", "add", style, "--target", target)
    assert code == 0, out
    style_id = out.split()[0]
    for _ in range(4):   # each run's channel starts round_robin at a random replica: same library
        code, out = await stylecast("styles", "list", "--target", target)
        assert code == 0 and out.split()[0] == style_id, out
    assert calls(a, "ListStyles") + calls(b, "ListStyles") == 4


def streams(server, code: str = "OK") -> float:
    return server.engine.metrics.registry.get_sample_value(
        "stylecast_stream_duration_seconds_count",
        {"method": SERVICE + "Stylize", "code": code, "token": "anonymous"}) or 0.0


async def test_in_band_frame_errors_are_answers_not_failovers(server_factory, redis_url):
    a, b = await server_factory(style_store=redis_url), await server_factory(style_store=redis_url)
    async with AsyncClient(f"dns:///localhost:{a.port}") as by_name:   # a DNS target resolves too
        style = await by_name.register_style(picture(40, 40, seed=14))
    async with AsyncClient(f"ipv4:127.0.0.1:{a.port},127.0.0.1:{b.port}") as client:
        frames = [picture(32, 32, seed=1), b"\x89PNG\r\n\x1a\n not a png", picture(32, 32, seed=2)]
        results = [r async for r in client.stream(frames, style, output="raw")]
    assert [(r.id, r.status) for r in results] == [(0, "ok"), (1, "error"), (2, "ok")]
    assert results[1].error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert streams(a) + streams(b) == 1      # one call: nothing was retried or resumed
