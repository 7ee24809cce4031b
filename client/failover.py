"""One ``Stylize`` stream that survives its replica: resume elsewhere from the first unanswered frame.

A stream sticks to the replica its call landed on.  When that replica drains
(SIGTERM → health NOT_SERVING → the stream ends UNAVAILABLE after answering every
frame it read) or dies (the connection breaks: UNAVAILABLE), the stream opens a
new call — the channel's round_robin and client-side health checking pick a
healthy replica, ``wait_for_ready`` waits for one — and sends again the
StreamConfig in effect for the first unanswered frame, then every unanswered
frame in order, then the current StreamConfig, then carries on with the frames
not yet sent.  Frame ids never restart, so every id is answered exactly once, in
order (an answer to an id already answered is dropped).  Only a call that its
replica ended resumes — UNAVAILABLE, or OK before every frame was sent and
answered (a drain that half-closed the stream); in-band answers (``FrameError``,
``FrameDropped``) are answers and are never retried, and any other status ends
the stream.  A stream whose first call fails before any frame went out fails at
once (no server at that address) unless its replica ended it (``SHUTTING_DOWN``,
or closed early): then it resumes like any other.  Five resumes in a row without
an answer give up with :class:`Unavailable`.

Memory: the unanswered frames are kept until answered (at most ``max_in_flight``).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from stylecast.client.errors import StylecastError, Unavailable, from_rpc_error, rich_details
from stylecast.client.messages import StreamOptions, parse_response, response_id, to_config, to_image
from stylecast.client.types import FrameResult
from stylecast.v1 import stylecast_pb2 as pb

MAX_FAILOVERS = 5          # consecutive resumes without an answered frame before giving up
FAILOVER_BACKOFF_S = 0.05  # before the n-th consecutive resume: (n - 1) × this
FAILOVER_WAIT_S = 10.0     # how long a resumed call waits for a healthy replica
RESUMABLE = (grpc.StatusCode.UNAVAILABLE,)
# grpcio's asyncio client replaces the server's status by this one when a write races the end of
# the call (grpc/grpc#36066): the server's UNAVAILABLE (drain) is lost, so it counts as one.
_LOST_STATUS = (grpc.StatusCode.INTERNAL, "Internal error from Core")


def _interrupted(exc: Exception) -> bool:
    """The call ended because its replica went away (drain, death), not because of the request."""
    return exc.code() in RESUMABLE or (exc.code(), exc.details()) == _LOST_STATUS


def _ended_by_replica(exc: Exception) -> bool:
    """A server was there and ended the call itself (it is shutting down, or closed the stream
    early), as opposed to a call that never reached a server."""
    if isinstance(exc, _EndedEarly):
        return True
    return rich_details(exc.trailing_metadata()).get("reason") == "SHUTTING_DOWN"


class _EndedEarly(Exception):
    """The server closed the call (OK) before this client finished sending: a drain that
    half-closed the stream; the rest must go to another replica."""

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return str(self)


class FailoverStream:
    """Drives one logical stream over as many ``Stylize`` calls as failover needs.

    ``open_call(wait_for_ready, timeout)`` starts a call; ``items`` is the user's frames and
    :class:`StreamOptions` (an async iterator, pulled one item at a time as the window allows;
    a pull outlives the call that started it, so a resume never loses an item).
    ``check(request, output)`` vets each frame before it is sent: a frame it refuses (ValueError
    or StylecastError) is not sent, the frames before it are still answered, then the stream
    raises the refusal.
    """

    def __init__(self, open_call: Callable[[bool, float | None], Any], config: pb.StreamConfig,
                 items: AsyncIterator[Any], *, check: Callable[[pb.StylizeRequest, pb.OutputOptions], Awaitable[None]],
                 failover: bool, timeout: float | None, max_in_flight: int | None) -> None:
        self._open_call, self._check, self._failover, self._timeout = open_call, check, failover, timeout
        self._config = pb.StylizeRequest(config=config)
        self._window = asyncio.Semaphore(max_in_flight) if max_in_flight else None
        # frame id -> (the config request in effect for it, its request, perf_counter when first sent)
        self._pending: OrderedDict[int, tuple[pb.StylizeRequest, pb.StylizeRequest, float]] = OrderedDict()
        self._next_id = 0
        self._items = items
        self._pull: asyncio.Task | None = None   # the pending __anext__ of ``items``
        self._held: Any = None                   # an item pulled but not yet sent
        self._produced_all = False
        self._refused: BaseException | None = None  # the frame check's refusal that ended the sending
        self.resumes = 0                         # calls opened after the first

    async def _next_item(self) -> Any:
        """The held item, else the next one; raises StopAsyncIteration at the end."""
        if self._held is None:
            if self._pull is None:
                self._pull = asyncio.ensure_future(self._items.__anext__())
            await asyncio.wait([self._pull])  # a cancelled writer leaves the pull (and its item) to the next
            pull, self._pull = self._pull, None
            self._held = pull.result()
        return self._held

    async def results(self) -> AsyncIterator[FrameResult]:
        """Every frame's result, in send order, across as many calls as it takes."""
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        stalled = 0   # consecutive resumes with no answer
        try:
            while True:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                resumed = self.resumes > 0
                call = self._open_call(resumed, remaining)
                writer = asyncio.create_task(self._write(call, resumed))
                answered = False
                try:
                    async for result in self._read(call, writer):
                        stalled, answered = 0, True
                        yield result
                    await writer
                    if self._refused is not None:
                        raise self._refused
                    return
                except (grpc.aio.AioRpcError, _EndedEarly) as exc:
                    # A stream whose very first call fails before a frame went out or came back
                    # was refused, not interrupted (no server, wrong address): report it at once,
                    # unless the replica itself ended it (a drain before the first frame).
                    expired = deadline is not None and time.monotonic() >= deadline
                    started = answered or resumed or self._pending or _ended_by_replica(exc)
                    if expired or not (self._failover and _interrupted(exc) and started):
                        if isinstance(exc, grpc.aio.AioRpcError) and (expired or not _interrupted(exc)
                                                                       or exc.code() in RESUMABLE):
                            raise from_rpc_error(exc) from None  # past the deadline: as grpcio said
                        raise Unavailable(f"the stream's replica went away: {exc.details()}") from None
                    stalled += 1
                    if stalled > MAX_FAILOVERS:
                        raise Unavailable(f"stream failover gave up after {MAX_FAILOVERS} attempts with no "
                                          f"answer: {exc.details()}") from None
                    self.resumes += 1
                    await asyncio.sleep(FAILOVER_BACKOFF_S * (stalled - 1))
                finally:
                    writer.cancel()
                    call.cancel()
                    await asyncio.gather(writer, return_exceptions=True)
        finally:
            if self._pull is not None:
                self._pull.cancel()
                await asyncio.gather(self._pull, return_exceptions=True)

    async def _read(self, call: Any, writer: asyncio.Task) -> AsyncIterator[FrameResult]:
        while True:
            try:
                msg = await call.read()
            except (grpc.aio.AioRpcError, asyncio.CancelledError) as exc:
                if writer.done() and not writer.cancelled() and writer.exception() is not None:
                    raise writer.exception() from None  # the producer or a frame failed
                raise exc from None
            if msg is grpc.aio.EOF:
                if self._pending or not self._produced_all:  # else every frame went out and came back
                    raise _EndedEarly(f"the server ended the stream early ({len(self._pending)} frames unanswered)")
                return
            frame_id = response_id(msg)
            if frame_id not in self._pending:
                continue  # already answered before a resume: exactly once
            while self._pending:  # answers come in send order
                first, (_, _, start) = self._pending.popitem(last=False)
                if self._window is not None:
                    self._window.release()
                if first == frame_id:
                    break
            yield parse_response(msg, (time.perf_counter() - start) * 1e3)

    async def _write(self, call: Any, resumed: bool) -> None:
        try:
            last_config = None
            if resumed:
                try:
                    await asyncio.wait_for(call.wait_for_connection(), FAILOVER_WAIT_S)
                except asyncio.TimeoutError:
                    raise Unavailable(f"stream failover: no healthy replica within {FAILOVER_WAIT_S:g} s") from None
                for config, request, _ in list(self._pending.values()):
                    if config is not last_config:
                        await call.write(config)
                        last_config = config
                    await call.write(request)
            if self._config is not last_config:
                await call.write(self._config)
            while not self._produced_all:
                try:
                    item = await self._next_item()
                except StopAsyncIteration:
                    self._produced_all = True
                    break
                if isinstance(item, StreamOptions):
                    self._config = pb.StylizeRequest(config=to_config(item))
                    self._held = None
                    await call.write(self._config)
                    continue
                try:
                    request = pb.StylizeRequest(frame=pb.Frame(id=self._next_id, image=to_image(item)))
                    await self._check(request, self._config.config.output)
                except (ValueError, StylecastError) as exc:  # refused before sending: no more frames
                    self._refused, self._produced_all, self._held = exc, True, None
                    break
                if self._window is not None:
                    await self._window.acquire()
                self._pending[self._next_id] = (self._config, request, time.perf_counter())
                self._next_id += 1
                self._held = None
                await call.write(request)
            await call.done_writing()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            return  # the call ended first; the reader reports why (or resumes)
        except BaseException:
            call.cancel()  # a bad frame or a failing producer: stop the RPC and let the reader re-raise
            raise
