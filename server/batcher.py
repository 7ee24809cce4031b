"""Cross-stream batching of frames with the same key (model, version, format, H, W).

After Ray Serve's ``_BatchQueue``: one future per request, a batch closes at
``max_batch`` items or ``max_wait`` seconds after its oldest item, and every
waiter of a failed batch gets the error — as does every waiter of a batch whose
function returned more or fewer outputs than it was given inputs.  At most ``workers`` batches run at
once, each on the inference executor.  Cancelled requests are skipped.

With ``max_batch`` 1 (the default) there is nothing to gather: a request waits for a
slot (first come, first served) and runs, without the dispatcher task and its queue.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

RunBatch = Callable[[np.ndarray, np.ndarray], np.ndarray]


class BatchSizeMismatch(RuntimeError):
    """The batch function returned a different number of outputs than it was given inputs."""


@dataclass(frozen=True)
class BatchResult:
    image: np.ndarray     # H×W×3, as the batch function returns it
    batch_size: int
    queue_s: float        # waiting for a batch slot
    infer_s: float        # the batch's inference time


@dataclass
class _Item:
    content: np.ndarray
    vector: np.ndarray
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)
    queued: bool = True  # counted in Batcher.pending (until taken into a batch or cancelled)


class Batcher:
    def __init__(self, run_batch: RunBatch, executor: Executor, *, workers: int,
                 max_batch: int, max_wait_s: float) -> None:
        self._run_batch, self._executor = run_batch, executor
        self._max_batch, self._max_wait = max_batch, max_wait_s
        self._queues: dict[Hashable, deque[_Item]] = {}
        self._slots = asyncio.Semaphore(workers)
        self._arrived = asyncio.Event()
        self._loop_task: asyncio.Task | None = None
        self._running: set[asyncio.Future] = set()
        self._single_waiting = 0  # max_batch 1: requests waiting for a slot
        self._queued = 0          # max_batch > 1: items queued, not yet taken into a batch or cancelled
        self._closed = False

    async def submit(self, key: Hashable, content: np.ndarray, vector: np.ndarray) -> BatchResult:
        """Queue one H×W×3 frame with its style vector; resolves when its batch has run."""
        if self._max_batch == 1:
            return await self._run_single(content, vector)
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._dispatch(), name="stylecast-batcher")
        item = _Item(content, vector, asyncio.get_running_loop().create_future())
        self._queues.setdefault(key, deque()).append(item)
        self._queued += 1
        self._arrived.set()
        try:
            return await item.future
        finally:
            self._taken(item)  # cancelled while queued: no longer counted

    def _taken(self, item: _Item) -> None:
        if item.queued:
            item.queued = False
            self._queued -= 1

    @property
    def pending(self) -> int:
        """Frames queued and not yet in a running batch (cancelled ones excluded).  Two counters:
        safe to read from another thread (the metrics scrape)."""
        return self._single_waiting + self._queued

    async def close(self) -> None:
        """Stop dispatching, fail queued requests and wait for running batches."""
        self._closed = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        for q in self._queues.values():
            for item in q:
                if not item.future.done():
                    item.future.set_exception(RuntimeError("batcher closed"))
        self._queues.clear()
        await asyncio.gather(*self._running, return_exceptions=True)

    def _prune(self) -> None:
        for key in list(self._queues):
            q = self._queues[key]
            while q and q[0].future.done():  # cancelled by its stream
                q.popleft()
            if not q:
                del self._queues[key]

    async def _next_batch(self) -> tuple[Hashable, list[_Item]]:
        while True:
            self._prune()
            if not self._queues:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            key = min(self._queues, key=lambda k: self._queues[k][0].enqueued)
            q = self._queues[key]
            deadline = q[0].enqueued + self._max_wait
            while len(q) < self._max_batch and (wait := deadline - time.perf_counter()) > 0:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), wait)
                except TimeoutError:
                    break
            items = [q.popleft() for _ in range(min(self._max_batch, len(q)))]
            for i in items:
                self._taken(i)
            items = [i for i in items if not i.future.done()]
            if items:
                return key, items

    async def _dispatch(self) -> None:
        while True:
            await self._slots.acquire()
            try:
                _, items = await self._next_batch()
            except BaseException:
                self._slots.release()
                raise
            task = asyncio.create_task(self._run(items))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _call(self, items: list[_Item]) -> np.ndarray:
        """Stack the batch and run it (on the executor: the copies stay off the event loop)."""
        content = items[0].content[None] if len(items) == 1 else np.stack([i.content for i in items])
        return self._run_batch(content, np.stack([i.vector for i in items]))

    async def _run_single(self, content: np.ndarray, vector: np.ndarray) -> BatchResult:
        """max_batch 1: wait for a slot, run on the executor; the slot is held until the call
        returns, even when the caller is cancelled meanwhile.

        The executor thread hands the outcome back with one ``call_soon_threadsafe`` (no
        ``run_in_executor`` future chaining and no ``shield``: about half the event-loop work
        per frame of that hop)."""
        enqueued = time.perf_counter()
        self._single_waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._single_waiting -= 1
        if self._closed:
            self._slots.release()
            raise RuntimeError("batcher closed")
        loop = asyncio.get_running_loop()
        answer, finished = loop.create_future(), loop.create_future()  # the caller's; the call's own end

        def settle(out: np.ndarray | None, exc: BaseException | None) -> None:  # on the loop
            self._running.discard(finished)
            self._slots.release()
            finished.set_result(None)
            if answer.done():  # the caller was cancelled
                return
            if exc is not None:
                answer.set_exception(exc)
            else:
                answer.set_result(out)

        def call() -> None:  # on the executor
            try:
                out = self._run_batch(content[None], vector[None])
            except BaseException as exc:  # handed to the caller
                loop.call_soon_threadsafe(settle, None, exc)
            else:
                loop.call_soon_threadsafe(settle, out, None)

        start = time.perf_counter()
        self._running.add(finished)
        try:
            self._executor.submit(call)
        except BaseException:  # the executor is shut down
            settle(None, None)
            raise
        out = await answer
        if len(out) != 1:
            raise BatchSizeMismatch(f"the batch function returned {len(out)} outputs for 1 input")
        return BatchResult(out[0], 1, start - enqueued, time.perf_counter() - start)

    async def _run(self, items: list[_Item]) -> None:
        try:
            start = time.perf_counter()
            try:
                out = await asyncio.get_running_loop().run_in_executor(self._executor, self._call, items)
                if len(out) != len(items):
                    raise BatchSizeMismatch(f"the batch function returned {len(out)} outputs for {len(items)} "
                                            "inputs; every frame of the batch failed")
            except Exception as exc:  # every waiter gets the batch's error
                for i in items:
                    if not i.future.done():
                        i.future.set_exception(exc)
                return
            infer = time.perf_counter() - start
            for n, i in enumerate(items):
                if not i.future.done():
                    i.future.set_result(BatchResult(out[n], len(items), start - i.enqueued, infer))
        finally:
            self._slots.release()
