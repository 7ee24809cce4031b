"""The cross-stream batcher: keys never mix, size and wait limits, errors reach every waiter."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from conftest import decode_result, picture, raw_image, register

from stylecast.server.batcher import Batcher, BatchSizeMismatch
from stylecast.v1 import stylecast_pb2 as pb
from stylecast.v1 import stylecast_pb2_grpc as pb_grpc


class Recorder:
    """A real batch function (content scaled by the first vector entry) that records batch shapes."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.shapes: list[tuple[int, ...]] = []
        self.gate = gate

    def __call__(self, content: np.ndarray, styles: np.ndarray) -> np.ndarray:
        if self.gate is not None:
            self.gate.wait(10)
        self.shapes.append(content.shape)
        if np.any(styles[:, 0] < 0):
            raise ValueError("negative style")
        return content * styles[:, :1, None, None]


async def taken(batcher: Batcher) -> None:
    """Until every queued frame is in a running batch (no sleep sized for an idle machine)."""
    for _ in range(1000):
        if not batcher.pending:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{batcher.pending} frames still queued after 10 s")


async def until(condition) -> None:
    """Until ``condition()`` holds (polled every 10 ms, at most 10 s: no sleep sized for an idle machine)."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition still false after 10 s")


async def test_batches_group_same_keys_up_to_max_batch():
    gate = threading.Event()
    run = Recorder(gate)
    with ThreadPoolExecutor(1) as pool:
        batcher = Batcher(run, pool, workers=1, max_batch=3, max_wait_s=0.2)
        first = asyncio.ensure_future(batcher.submit("a", np.ones((2, 2, 3)), np.array([9.0])))
        await asyncio.sleep(0)
        await taken(batcher)  # the first batch is now running (held by the gate)
        jobs = [batcher.submit("a" if i % 2 else "b", np.full((2, 2, 3), i, float), np.array([float(i)]))
                for i in range(8)]
        tasks = [asyncio.ensure_future(j) for j in jobs]
        await asyncio.sleep(0)
        gate.set()
        results = await asyncio.gather(first, *tasks)
        await batcher.close()
    for i, res in enumerate(results[1:]):
        np.testing.assert_array_equal(res.image, np.full((2, 2, 3), i * i, float))
        assert 1 <= res.batch_size <= 3
    assert all(s[0] <= 3 for s in run.shapes)
    assert len(run.shapes) == 1 + 2 + 2  # 1 held; 4 "a" → 3+1; 4 "b" → 3+1


async def test_a_failed_batch_fails_every_waiter_and_cancelled_requests_are_skipped():
    gate = threading.Event()
    run = Recorder(gate)
    with ThreadPoolExecutor(1) as pool:
        batcher = Batcher(run, pool, workers=1, max_batch=4, max_wait_s=0.05)
        held = asyncio.ensure_future(batcher.submit("k", np.ones((1, 1, 3)), np.array([1.0])))
        await asyncio.sleep(0)
        await taken(batcher)  # the held batch is running (blocked on the gate)
        good = asyncio.ensure_future(batcher.submit("k", np.ones((1, 1, 3)), np.array([2.0])))
        bad = asyncio.ensure_future(batcher.submit("k", np.ones((1, 1, 3)), np.array([-1.0])))
        gone = asyncio.ensure_future(batcher.submit("k", np.ones((1, 1, 3)), np.array([3.0])))
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.sleep(0)
        assert batcher.pending == 2
        gate.set()
        assert (await held).batch_size == 1
        for fut in (good, bad):
            with pytest.raises(ValueError, match="negative style"):
                await fut
        await batcher.close()
    assert run.shapes[1][0] == 2  # the cancelled request never reached the backend


@pytest.mark.parametrize("extra", [-1, 1])
async def test_a_batch_answered_with_the_wrong_number_of_outputs_fails_every_waiter(extra):
    def run(content: np.ndarray, styles: np.ndarray) -> np.ndarray:  # one output too few / too many
        n = len(content) + extra
        return np.resize(content * styles[:, :1, None, None], (n, *content.shape[1:]))

    with ThreadPoolExecutor(1) as pool:
        batcher = Batcher(run, pool, workers=1, max_batch=3, max_wait_s=0.2)
        futures = [asyncio.ensure_future(batcher.submit("k", np.full((2, 2, 3), i, float), np.array([1.0])))
                   for i in range(3)]
        done = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 10)
        await batcher.close()
    assert [type(r) for r in done] == [BatchSizeMismatch] * 3
    assert f"returned {3 + extra} outputs for 3 inputs" in str(done[0])


async def test_max_batch_one_runs_each_frame_alone_at_most_workers_at_once():
    """max_batch 1: every frame runs alone, in arrival order, never more than ``workers`` at once;
    a caller cancelled while its frame runs keeps the slot busy until the call returns, and
    one that is cancelled while waiting never reaches the backend."""
    gate, running, peak, order = threading.Event(), [0], [0], []
    lock = threading.Lock()

    def run(content: np.ndarray, styles: np.ndarray) -> np.ndarray:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            order.append(int(styles[0, 0]))
        gate.wait(10)
        with lock:
            running[0] -= 1
        if styles[0, 0] < 0:
            raise ValueError("negative style")
        return content * styles[:, :1, None, None]

    with ThreadPoolExecutor(4) as pool:
        batcher = Batcher(run, pool, workers=2, max_batch=1, max_wait_s=0.0)
        futures = [asyncio.ensure_future(batcher.submit("k", np.full((2, 2, 3), 1.0), np.array([float(i)])))
                   for i in range(6)]
        await until(lambda: len(order) == 2)
        assert order == [0, 1] and batcher.pending == 4
        futures[0].cancel()  # running: its slot stays taken until the backend returns
        futures[3].cancel()  # waiting: skipped
        await until(lambda: batcher.pending == 3)
        await asyncio.sleep(0.05)  # a freed slot would start frame 2 now
        assert order == [0, 1] and batcher.pending == 3
        gate.set()
        done = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 10)
        bad = await asyncio.gather(batcher.submit("k", np.ones((1, 1, 3)), np.array([-1.0])), return_exceptions=True)
        await batcher.close()
    assert peak[0] == 2 and order == [0, 1, 2, 4, 5, -1]
    for i in (1, 2, 4, 5):
        assert done[i].batch_size == 1
        np.testing.assert_array_equal(done[i].image, np.full((2, 2, 3), float(i)))
    assert isinstance(done[0], asyncio.CancelledError) and isinstance(done[3], asyncio.CancelledError)
    assert isinstance(bad[0], ValueError)


async def test_frames_from_concurrent_streams_share_batches(server_factory):
    server = await server_factory(workers=1, max_batch=4, max_wait_ms=20)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.StyleTransferStub(channel)
        style = await register(stub, picture(64, 64, seed=60))
        raw = pb.OutputOptions(encoding=pb.ENCODING_RAW_RGB24)
        img = picture(96, 64, seed=61)

        async def stream():
            async def requests():
                yield pb.StylizeRequest(config=pb.StreamConfig(style_id=style.id, output=raw))
                for i in range(6):
                    yield pb.StylizeRequest(frame=pb.Frame(id=i, image=raw_image(img)))
            return [r.frame async for r in stub.Stylize(requests())]

        frames = [f for s in await asyncio.gather(*(stream() for _ in range(4))) for f in s]
        alone = await stub.StylizeImage(pb.StylizeImageRequest(config=pb.StreamConfig(style_id=style.id, output=raw),
                                                               image=raw_image(img)))
    assert max(f.batch_size for f in frames) > 1
    expected = decode_result(alone.result.image).astype(int)
    for f in frames:
        assert np.abs(decode_result(f.image).astype(int) - expected).max() <= 1
