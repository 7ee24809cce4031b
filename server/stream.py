"""One ``Stylize`` stream: a reader task admitting frames and a writer answering them in order.

Every frame id is answered exactly once, in send order (a :class:`StylizedFrame`,
a :class:`FrameError` or a :class:`FrameDropped`).  EVERY_FRAME holds at most
``queue_depth`` unanswered frames and then stops reading, so HTTP/2 flow control
pushes back on the client.  LIVE never stops reading: at most ``workers`` frames
run at once, one more waits, and a newer frame replaces (drops) the waiting one.
A fatal condition (bad or missing StreamConfig, shutdown) is raised after every
frame read before it has been answered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from stylecast.server import wire
from stylecast.server.errors import (InvalidArgument, ResourceExhausted, ShuttingDown, answer_too_large, code_number,
                                     to_status)
from stylecast.server.metrics import Metrics
from stylecast.server.session import FrameTrace, Session, Sessions
from stylecast.v1 import stylecast_pb2 as pb

LIVE_BACKLOG = 256  # unwritten LIVE answers (mostly tiny FrameDropped) before reading pauses


@dataclass(eq=False)  # identity semantics: jobs live in a set
class _Job:
    frame: pb.Frame
    session: Session
    trace: FrameTrace
    permit: asyncio.Semaphore
    future: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    task: asyncio.Task | None = None
    outcome: str = ""  # ok | error | dropped once answered (counted when the answer is written)
    backend: str = ""

    def answer(self, response: pb.StylizeResponse, outcome: str, backend: str) -> None:
        if not self.future.done():
            self.future.set_result(response)
            self.outcome, self.backend = outcome, backend


@dataclass
class _End:
    error: BaseException | None = None


class StylizeStream:
    """Runs one stream over ``read()`` (returns a request or ``eof``) and ``write(response)``.

    Frames run through ``sessions``; ``slot`` says how many run at once (LIVE) and which
    backend a dropped frame would have run on."""

    def __init__(self, sessions: Sessions, metrics: Metrics, read: Callable[[], Awaitable],
                 write: Callable[[pb.StylizeResponse], Awaitable], eof: object, shutdown: asyncio.Event) -> None:
        self._sessions, self._slot, self._metrics = sessions, sessions.slot, metrics
        self._read, self._write, self._eof = read, write, eof
        self._shutdown = shutdown
        self._queue: asyncio.Queue[_Job | _End] = asyncio.Queue()
        self._every_frame = asyncio.Semaphore(sessions.config.queue_depth)
        self._live_backlog = asyncio.Semaphore(LIVE_BACKLOG)
        self._session: Session | None = None
        self._live = False
        self._running: set[_Job] = set()
        self._waiting: _Job | None = None
        self._closed = False

    async def run(self) -> None:
        """Serve the stream to its end; raises the fatal error that ended it, if any.

        Each frame read is counted once in ``stylecast_frames_total``: with its answer's outcome
        when that answer has been written, as cancelled when the stream ended first."""
        reader = asyncio.create_task(self._reader(), name="stylecast-stream-reader")
        unwritten: _Job | None = None
        try:
            while True:
                item = await self._queue.get()
                if isinstance(item, _End):
                    if item.error is not None:
                        raise item.error
                    return
                unwritten = item
                response = self._fits(await item.future, item)
                await self._write(response)
                unwritten = None
                self._metrics.frame_answered(item.backend, item.outcome)
                item.permit.release()
        finally:
            self._closed = True
            reader.cancel()
            jobs = [j.task for j in self._running if j.task is not None]
            for task in jobs:
                task.cancel()
            await asyncio.gather(reader, *jobs, return_exceptions=True)
            never = [unwritten] if unwritten is not None else []
            while not self._queue.empty():
                if isinstance(item := self._queue.get_nowait(), _Job):
                    never.append(item)
            if never:
                self._metrics.frame_answered(self._slot.backend_name, "cancelled", len(never))

    def _fits(self, response: pb.StylizeResponse, job: _Job) -> pb.StylizeResponse:
        """``response``, or a RESOURCE_EXHAUSTED FrameError in its place when it exceeds the message
        limit (gRPC would fail the write and end the stream)."""
        limit = self._sessions.config.max_message_bytes
        if (size := response.ByteSize()) <= limit:
            return response
        job.outcome = "error"
        error = ResourceExhausted(answer_too_large(size, limit))
        return pb.StylizeResponse(error=pb.FrameError(id=job.frame.id, code=code_number(error.code),
                                                      message=str(error)))

    # ------------------------------------------------------------------ reader

    async def _next(self, shutdown: asyncio.Future):
        read = asyncio.ensure_future(self._read())
        await asyncio.wait((read, shutdown), return_when=asyncio.FIRST_COMPLETED)
        if not read.done():
            read.cancel()
            raise ShuttingDown()
        return read.result()

    async def _reader(self) -> None:
        shutdown = asyncio.ensure_future(self._shutdown.wait())
        try:
            first = True
            while (msg := await self._next(shutdown)) is not self._eof:
                kind = msg.WhichOneof("msg")
                if first and kind != "config":
                    raise InvalidArgument("the first message of a Stylize stream must be a StreamConfig")
                first = False
                if kind == "config":
                    await self._configure(msg.config)
                elif kind == "frame":
                    await self._admit(msg.frame, time.perf_counter())
                else:
                    raise InvalidArgument("empty StylizeRequest: set config or frame")
            end = _End()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # fatal for the stream: reported after earlier frames
            end = _End(exc)
        finally:
            shutdown.cancel()
        self._queue.put_nowait(end)

    async def _configure(self, cfg: pb.StreamConfig) -> None:
        self._session = await self._sessions.open(wire.style_spec(cfg), wire.output_spec(cfg.output),
                                                  cfg.process_max_side, cfg.model)
        self._live = cfg.mode == pb.STREAM_MODE_LIVE
        if self._waiting is not None:  # the new config must not strand a waiting LIVE frame
            self._start(self._waiting)
            self._waiting = None

    async def _admit(self, frame: pb.Frame, received: float) -> None:
        permit = self._live_backlog if self._live else self._every_frame
        await permit.acquire()  # EVERY_FRAME: blocks when queue_depth frames are unanswered
        job = _Job(frame, self._session, FrameTrace(received), permit)
        self._queue.put_nowait(job)
        if not self._live or len(self._running) < self._slot.workers:
            self._start(job)
            return
        if self._waiting is not None:
            self._waiting.answer(pb.StylizeResponse(dropped=pb.FrameDropped(
                id=self._waiting.frame.id, reason="LIVE stream: a newer frame arrived while this one waited")),
                "dropped", self._slot.backend_name)  # the backend that would have run it
        self._waiting = job

    # -------------------------------------------------------------------- jobs

    def _start(self, job: _Job) -> None:
        self._running.add(job)
        job.task = asyncio.create_task(self._process(job))

    async def _process(self, job: _Job) -> None:
        try:
            res = await job.session.process(wire.image_input(job.frame.image), job.trace)
            job.answer(pb.StylizeResponse(frame=wire.stylized_frame(job.frame.id, res)), "ok", res.backend)
            self._metrics.frame_done(res.backend, res.timings_ms)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bad frame: answered in-band, the stream goes on
            code, message = to_status(exc)
            job.answer(pb.StylizeResponse(error=pb.FrameError(id=job.frame.id, code=code_number(code),
                                                              message=message)),
                       # the backend that ran it, or (failed before inference) the one that would have
                       "error", job.trace.backend or self._slot.backend_name)
        finally:
            self._running.discard(job)
            if not self._closed and self._waiting is not None and len(self._running) < self._slot.workers:
                waiting, self._waiting = self._waiting, None
                self._start(waiting)
