"""One ``Stylize`` stream: a reader task admitting frames and a writer answering them in order.

Every frame id is answered exactly once, in send order (a :class:`StylizedFrame`,
a :class:`FrameError` or a :class:`FrameDropped`).  EVERY_FRAME holds at most
``queue_depth`` unanswered frames and then stops reading, so HTTP/2 flow control
pushes back on the client.  LIVE keeps reading while frames run: at most ``workers`` frames
run at once, one more waits, and a newer frame replaces (drops) the waiting one (reading
pauses only past ``LIVE_BACKLOG`` unwritten answers and on the memory bounds below).
A fatal condition (bad or missing StreamConfig, shutdown) is raised after every
frame read before it has been answered.

Memory is bounded in every mode: the bytes a stream holds (frames read, answers not yet
sent) pause its reading past ``stream_buffer_bytes``; all streams together are counted in
one :class:`FrameMemory` of ``frame_memory_bytes``, past which a stream reads only while it
holds nothing and new streams are refused (RESOURCE_EXHAUSTED).  An answer that cannot be
sent for ``stall_timeout_s`` (a client that stopped reading) ends the stream
(DEADLINE_EXCEEDED), freeing what it held.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from stylecast.server import wire
from stylecast.server.errors import (InvalidArgument, ResourceExhausted, ShuttingDown, Stalled, answer_too_large,
                                     code_number, to_status)
from stylecast.server.metrics import Metrics
from stylecast.server.serving import Assignment
from stylecast.server.session import FrameTrace, Session, Sessions
from stylecast.v1 import stylecast_pb2 as pb

LIVE_BACKLOG = 256  # unwritten LIVE answers (mostly tiny FrameDropped) before reading pauses


class FrameMemory:
    """Bytes of frames all streams of one server hold (requests read, answers not yet sent),
    against a budget; event loop only.  ``gauge`` (optional) reports :attr:`held` when it is
    collected (nothing to update per frame)."""

    def __init__(self, budget: int, gauge=None) -> None:
        self.budget, self.held = budget, 0
        if gauge is not None:
            gauge.set_function(lambda: self.held)
        self._changed = asyncio.Event()

    @property
    def full(self) -> bool:
        return self.held >= self.budget

    def add(self, n: int) -> None:
        """Count ``n`` more bytes (negative: fewer); a decrease wakes streams waiting for room."""
        self.held += n
        if n < 0:
            self._changed.set()
            self._changed = asyncio.Event()

    async def changed(self) -> None:
        """Wait until some stream frees bytes."""
        await self._changed.wait()


@dataclass(eq=False)  # identity semantics: jobs live in a set
class _Job:
    frame: wire.ReceivedFrame | None  # dropped once answered: only the answer is held then
    frame_id: int
    session: Session
    trace: FrameTrace
    permit: asyncio.Semaphore
    bytes: int = 0                  # what this frame holds now: its request, then its answer
    future: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    task: asyncio.Task | None = None
    outcome: str = ""  # ok | error | dropped once answered (counted when the answer is written)
    backend: str = ""

    def answer(self, response: pb.StylizeResponse | bytes, outcome: str, backend: str) -> None:
        if not self.future.done():
            self.future.set_result(response)
            self.outcome, self.backend = outcome, backend


@dataclass
class _End:
    error: BaseException | None = None


class StylizeStream:
    """Runs one stream over ``read()`` (returns a request, a frame as :class:`wire.ReceivedFrame`,
    a :class:`wire.MalformedRequest`, or ``eof``: see :func:`wire.parse_stylize_request`) and
    ``write(response)``
    (a message, or a stylized frame already serialized: see :func:`wire.serialize_stylize_response`).

    Frames run through ``sessions``; its ``slot`` says how many run at once (LIVE) and which
    backend a dropped frame would have run on."""

    def __init__(self, sessions: Sessions, metrics: Metrics, read: Callable[[], Awaitable],
                 write: Callable[[pb.StylizeResponse | bytes], Awaitable], eof: object, shutdown: asyncio.Event,
                 memory: FrameMemory) -> None:
        self._sessions, self._slot, self._metrics = sessions, sessions.slot, metrics
        self._read, self._write, self._eof = read, write, eof
        self._shutdown, self._memory = shutdown, memory
        self._buffer_bytes = sessions.config.stream_buffer_bytes
        self._stall_s = sessions.config.stall_timeout_s
        self._held = 0
        self._queue: asyncio.Queue[_Job | _End] = asyncio.Queue()
        self._every_frame = asyncio.Semaphore(sessions.config.queue_depth)
        self._live_backlog = asyncio.Semaphore(LIVE_BACKLOG)
        self._session: Session | None = None
        self._assignment: Assignment | None = None  # the model version, for the stream's whole life
        self._live = False
        self._running: set[_Job] = set()
        self._waiting: _Job | None = None
        self._closed = False
        self._unwritten: _Job | None = None  # the answer being written (or waited for)
        self._writing = False                # a write is in progress, since _write_started (loop time)
        self._write_started = 0.0
        self._watchdog: asyncio.TimerHandle | None = None

    async def run(self) -> None:
        """Serve the stream to its end; raises the fatal error that ended it, if any
        (:class:`ResourceExhausted` at once when the server's frame memory is full).

        Each frame read is counted once in ``stylecast_frames_total``: with its answer's outcome
        when that answer has been written, as cancelled when the stream ended first."""
        if self._memory.full:
            raise ResourceExhausted(f"the server holds its budget of {self._memory.budget} bytes of frames "
                                    "(frame_memory_bytes) for other streams; retry later or on another replica",
                                    subject="frame_memory_bytes", retry_after_s=1.0)
        loop = asyncio.get_running_loop()
        reader = asyncio.create_task(self._reader(), name="stylecast-stream-reader")
        writer = asyncio.create_task(self._writer(), name="stylecast-stream-writer")
        stalled = loop.create_future()
        self._watchdog = loop.call_later(self._stall_s, self._watch, stalled)
        try:
            await asyncio.wait((writer, stalled), return_when=asyncio.FIRST_COMPLETED)
            if not writer.done():
                raise Stalled(f"no answer could be sent for {self._stall_s:g} s (stall_timeout_s): the client "
                              f"stopped reading; the stream ends, freeing {self._held} bytes")
            writer.result()  # the fatal error that ended the stream, if any
        finally:
            self._closed = True
            self._memory.add(-self._held)
            self._held = 0
            self._watchdog.cancel()
            reader.cancel()
            if self._writing:
                # not cancelled (a cancelled grpc write breaks the call): the status follows it, and
                # the writer stops after it (the stream is closed)
                writer.add_done_callback(lambda w: w.cancelled() or w.exception())
            else:
                writer.cancel()
            jobs = [j.task for j in self._running if j.task is not None]
            for task in jobs:
                task.cancel()
            await asyncio.gather(reader, *jobs, *([] if self._writing else [writer]), return_exceptions=True)
            never = [self._unwritten] if self._unwritten is not None else []
            while not self._queue.empty():
                if isinstance(item := self._queue.get_nowait(), _Job):
                    never.append(item)
            if never:
                self._metrics.frame_answered(self._slot.backend_name, "cancelled", len(never))
            if self._assignment is not None:
                self._assignment.release()

    async def _writer(self) -> None:
        """Write the answers in order until the reader's end; raises the fatal error that ended it.

        Awaits each write directly (no task and no timeout per answer): :meth:`_watch` notices a
        write that waits past ``stall_timeout_s``."""
        loop = asyncio.get_running_loop()
        while True:
            item = await self._queue.get()
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
            self._unwritten = item
            response = self._fits(await item.future, item)
            self._write_started, self._writing = loop.time(), True
            try:
                await self._write(response)
            finally:
                self._writing = False
            if self._closed:  # the stream ended (stalled) while this answer was being written
                return
            self._unwritten = None
            self._metrics.frame_answered(item.backend, item.outcome)
            self._hold(item, 0)
            item.permit.release()

    def _watch(self, stalled: asyncio.Future) -> None:
        """Resolve ``stalled`` once one write has waited ``stall_timeout_s``; else look again when
        the write now in progress (or the next one) would reach it.  One timer per stream."""
        loop = asyncio.get_running_loop()
        due = (self._write_started if self._writing else loop.time()) + self._stall_s
        if self._writing and loop.time() >= due - 1e-3:  # a timer may fire up to a clock tick early
            if not stalled.done():
                stalled.set_result(None)
            return
        self._watchdog = loop.call_at(due, self._watch, stalled)

    def _fits(self, response: pb.StylizeResponse | bytes, job: _Job) -> pb.StylizeResponse | bytes:
        """``response``, or a RESOURCE_EXHAUSTED FrameError in its place when it exceeds the message
        limit (gRPC would fail the write and end the stream)."""
        limit = self._sessions.config.max_message_bytes
        if (size := wire.stylize_response_size(response)) <= limit:
            return response
        job.outcome = "error"
        error = ResourceExhausted(answer_too_large(size, limit))
        return pb.StylizeResponse(error=pb.FrameError(id=job.frame_id, code=code_number(error.code),
                                                      message=str(error)))

    # ------------------------------------------------------------------ reader

    def _hold(self, job: _Job, n: int) -> None:
        """``job`` now holds ``n`` bytes (its request, its answer, or 0 once written)."""
        if self._closed:  # everything was released when the stream ended
            return
        delta, job.bytes = n - job.bytes, n
        self._held += delta
        self._memory.add(delta)

    def _room(self) -> bool:
        """Whether the reader may read: it holds nothing, or is within its own and the server's budget."""
        return not self._held or (self._held < self._buffer_bytes and not self._memory.full)

    async def _next(self):
        while not self._room():  # unsent answers pile up: stop reading, flow control pushes back
            await self._memory.changed()
        return await self._read()

    async def _reader(self) -> None:
        """Read and admit messages until EOF; a shutdown ends the stream with ShuttingDown.

        Shutdown cancels this task while it waits in :meth:`_next` (for room in the byte budget,
        or on ``read()``), or stops it before its next wait: no per-message race of two futures
        (reading is the hot path).  A message gRPC had just read when the shutdown came is not
        admitted: it is never answered, like one still in flight, and the client resends from
        its first unanswered frame."""
        reader, state = asyncio.current_task(), {"waiting": False, "stop": False}

        def stop(_: asyncio.Future) -> None:
            state["stop"] = True
            if state["waiting"]:
                reader.cancel()

        shutdown = asyncio.ensure_future(self._shutdown.wait())
        shutdown.add_done_callback(stop)
        try:
            first = True
            while True:
                if state["stop"]:
                    raise ShuttingDown()
                state["waiting"] = True
                try:
                    msg = await self._next()
                finally:
                    state["waiting"] = False
                if msg is self._eof:
                    break
                if isinstance(msg, wire.MalformedRequest):
                    raise InvalidArgument(f"a Stylize message is not a StylizeRequest ({msg.reason}): check that "
                                          "the client sends stylecast.v1.StylizeRequest messages")
                kind = "frame" if isinstance(msg, wire.ReceivedFrame) else msg.WhichOneof("msg")
                if first and kind != "config":
                    raise InvalidArgument("the first message of a Stylize stream must be a StreamConfig")
                first = False
                if kind == "config":
                    await self._configure(msg.config)
                elif kind == "frame":
                    await self._admit(msg, time.perf_counter())
                else:
                    raise InvalidArgument("empty StylizeRequest: set config or frame")
            end = _End()
        except asyncio.CancelledError:
            if not state["stop"]:
                raise
            reader.uncancel()  # cancelled by the shutdown: end the stream in order
            end = _End(ShuttingDown())
        except Exception as exc:  # fatal for the stream: reported after earlier frames
            end = _End(exc)
        finally:
            shutdown.remove_done_callback(stop)
            shutdown.cancel()
        self._queue.put_nowait(end)

    async def _configure(self, cfg: pb.StreamConfig) -> None:
        """Open a session for the stream's version: assigned at the first StreamConfig and kept, or
        the one a StreamConfig pins."""
        if self._assignment is None or (cfg.model_version and cfg.model_version != self._assignment.version):
            assignment = self._sessions.assign(cfg.model, cfg.model_version, stream=True)
            if self._assignment is not None:
                self._assignment.release()
            self._assignment = assignment
        self._session = await self._sessions.open(wire.style_spec(cfg), wire.output_spec(cfg.output),
                                                  cfg.process_max_side, cfg.model, self._assignment)
        self._live = cfg.mode == pb.STREAM_MODE_LIVE
        if self._waiting is not None:  # the new config must not strand a waiting LIVE frame
            self._start(self._waiting)
            self._waiting = None

    async def _admit(self, frame: wire.ReceivedFrame, received: float) -> None:
        permit = self._live_backlog if self._live else self._every_frame
        await permit.acquire()  # EVERY_FRAME: blocks when queue_depth frames are unanswered
        job = _Job(frame, frame.id, self._session, FrameTrace(received), permit)
        self._hold(job, frame.nbytes)
        self._queue.put_nowait(job)
        if not self._live or len(self._running) < self._slot.workers:
            self._start(job)
            return
        if self._waiting is not None:
            self._answer(self._waiting, pb.StylizeResponse(dropped=pb.FrameDropped(
                id=self._waiting.frame_id, reason="LIVE stream: a newer frame arrived while this one waited")),
                "dropped", self._slot.backend_name)  # the backend that would have run it
        self._waiting = job

    # -------------------------------------------------------------------- jobs

    def _answer(self, job: _Job, response: pb.StylizeResponse | bytes, outcome: str, backend: str) -> None:
        """Answer ``job`` once; from then on it holds its answer's bytes instead of its frame's."""
        if not job.future.done():
            job.frame = None
            self._hold(job, wire.stylize_response_size(response))
            job.answer(response, outcome, backend)

    def _start(self, job: _Job) -> None:
        self._running.add(job)
        job.task = asyncio.create_task(self._process(job))

    async def _process(self, job: _Job) -> None:
        try:
            res = await job.session.process(job.frame.image_input(), job.trace)
            self._answer(job, wire.stylized_frame_response(job.frame_id, res), "ok", res.backend)
            self._metrics.frame_done(res.backend, res.timings_ms)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bad frame: answered in-band, the stream goes on
            code, message = to_status(exc)
            self._answer(job, pb.StylizeResponse(error=pb.FrameError(id=job.frame_id, code=code_number(code),
                                                                     message=message)),
                         # the backend that ran it, or (failed before inference) the one that would have
                         "error", job.trace.backend or self._slot.backend_name)
        finally:
            self._running.discard(job)
            if not self._closed and self._waiting is not None and len(self._running) < self._slot.workers:
                waiting, self._waiting = self._waiting, None
                self._start(waiting)
