"""Video files through a stylize stream: PyAV decode → ``Client.stream`` (EVERY_FRAME) → encode.

What players need from the input is kept:

- **timestamps**: every frame keeps its own presentation time, in the input stream's time
  base, so variable-frame-rate clips stay variable (no constant rate is invented);
- **orientation**: the input's display matrix (a phone clip's rotation, flips) is copied to
  the output stream; the pixels stay as coded;
- **audio**: every audio track is remuxed unchanged when the output container accepts its
  codec, re-encoded to the container's default audio codec otherwise, and dropped (named in
  the report, with the reason) only when the container holds no audio.

The output is written to a temporary file next to ``dst`` and moved into place only once it
is complete, so a failed run never leaves a broken file (and never replaces an existing one).
"""

from __future__ import annotations

import contextlib
import io
import os
import queue
import tempfile
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from stylecast.client.messages import StyleSpec
from stylecast.client.sdk import Client


@dataclass(frozen=True)
class TrackReport:
    """What happened to one input track other than the stylized video: ``outcome`` is
    ``remuxed``, ``re-encoded`` (to ``codec_out``) or ``dropped`` (``reason`` says why)."""

    index: int          # the stream's index in the input file
    kind: str           # audio | video | subtitle | data | attachment
    codec: str
    outcome: str
    codec_out: str = ""
    reason: str = ""

    def describe(self) -> str:
        head = f"track {self.index} ({self.kind}, {self.codec})"
        if self.outcome == "re-encoded":
            return f"{head} re-encoded to {self.codec_out}"
        if self.outcome == "dropped":
            return f"{head} dropped: {self.reason}"
        return f"{head} {self.outcome}"


@dataclass(frozen=True)
class VideoReport:
    """``frames`` written at ``width``×``height`` (the input's size, cropped to even sides for
    4:2:0 video), ``rotation`` the display rotation kept (degrees counter-clockwise, 0 = none),
    ``tracks`` every other input track and what became of it."""

    frames: int
    width: int
    height: int
    rotation: int
    tracks: tuple[TrackReport, ...]

    @property
    def audio(self) -> str:
        """A one-word summary of the audio tracks: none | remuxed | re-encoded | mixed | dropped."""
        outcomes = {t.outcome for t in self.tracks if t.kind == "audio"}
        if not outcomes:
            return "none"
        return outcomes.pop() if len(outcomes) == 1 else "mixed"

    @property
    def dropped(self) -> tuple[TrackReport, ...]:
        return tuple(t for t in self.tracks if t.outcome == "dropped")


class _AudioPass:
    """Carries one input audio track into the output.  ``take`` runs on the decoding
    thread; ``write`` and ``finish`` on the thread that owns the output container."""

    def __init__(self, in_stream: Any, out: Any) -> None:
        self._items: queue.SimpleQueue[Any] = queue.SimpleQueue()
        import av

        ctx = in_stream.codec_context
        self.codec = ctx.codec.canonical_name  # "mp3", where the decoder is "mp3float"
        if self.codec in out.supported_codecs:
            self.mode, self.codec_out = "remuxed", self.codec
            self.stream = out.add_stream_from_template(in_stream)
        else:
            self.mode, self.codec_out = "re-encoded", out.default_audio_codec
            rates = sorted(av.Codec(self.codec_out, "w").audio_rates or ())
            rate = ctx.sample_rate
            if rates and rate not in rates:  # e.g. Opus takes 8/12/16/24/48 kHz only
                rate = next((r for r in rates if r >= rate), rates[-1])
            self.stream = out.add_stream(self.codec_out, rate=rate)
            self.stream.codec_context.layout = ctx.layout
        self.index = in_stream.index

    def report(self) -> TrackReport:
        return TrackReport(self.index, "audio", self.codec, self.mode,
                           self.codec_out if self.mode == "re-encoded" else "")

    def take(self, packet: Any) -> None:
        if self.mode == "remuxed":
            if packet.dts is not None:  # dts None: the demuxer's flush packet
                self._items.put(packet)
            return
        for frame in packet.decode():
            self._items.put(frame)

    def write(self, out: Any) -> None:
        while True:
            try:
                item = self._items.get_nowait()
            except queue.Empty:
                return
            if self.mode == "remuxed":
                item.stream = self.stream
                out.mux(item)
            else:
                item.pts = None
                out.mux(self.stream.encode(item))

    def finish(self, out: Any) -> None:
        self.write(out)
        if self.mode == "re-encoded":
            out.mux(self.stream.encode(None))


def _plan_tracks(inp: Any, vin: Any, out: Any) -> tuple[list[_AudioPass], list[TrackReport]]:
    """An :class:`_AudioPass` per audio track the output can hold; a report for each track left out."""
    passes, dropped = [], []
    for stream in inp.streams:
        if stream is vin:
            continue
        ctx = stream.codec_context
        codec = ctx.codec.canonical_name if ctx is not None else (stream.codec_tag or "unknown")
        if stream.type != "audio":
            reason = ("only the first video track is stylized" if stream.type == "video"
                      else f"{stream.type} tracks are not carried over")
            dropped.append(TrackReport(stream.index, stream.type, codec, "dropped", reason=reason))
        elif ctx is None:
            dropped.append(TrackReport(stream.index, "audio", codec, "dropped",
                                       reason="no decoder for this codec in this FFmpeg build"))
        elif codec not in out.supported_codecs and out.default_audio_codec in ("none", None):
            dropped.append(TrackReport(stream.index, "audio", codec, "dropped",
                                       reason=f"the {out.format.name} container holds no audio"))
        else:
            passes.append(_AudioPass(stream, out))
    return passes, dropped


def _display_matrix(frame: Any) -> list[int] | None:
    """The frame's display matrix (9 int32, FFmpeg's AV_PKT_DATA_DISPLAYMATRIX layout), if any."""
    for side in frame.side_data:
        if side.type.name == "DISPLAYMATRIX":
            return np.frombuffer(bytes(side), np.int32).tolist()
    return None


def output_format(dst: str | Path) -> str:
    """The muxer FFmpeg picks for ``dst``'s suffix.  Raises ``ValueError`` (one actionable line)
    when the suffix names no container PyAV can write video into; nothing is created at ``dst``."""
    import av

    path = Path(dst)
    with tempfile.TemporaryDirectory() as scratch:
        try:
            with av.open(os.path.join(scratch, "probe" + path.suffix), "w") as probe:
                name, video = probe.format.name, probe.default_video_codec
        except av.error.FFmpegError as exc:
            raise ValueError(f"{path}: cannot write this container ({exc})") from None
        except ValueError:
            raise ValueError(f"{path}: the output needs a video container suffix such as .mp4, .mkv, .mov "
                             f"or .webm (got {path.suffix or 'no suffix'})") from None
    if video in ("none", None) or name.startswith("image2"):
        raise ValueError(f"{path}: {path.suffix} is not a video container; use .mp4, .mkv, .mov or .webm")
    return name


def stylize_video(client: Client, src: str | Path, dst: str | Path, style: StyleSpec, *,
                  strength: float | None = None, process_max_side: int = 0, wire: str = "raw",
                  progress: Any = None) -> VideoReport:
    """Stylize every frame of ``src`` into ``dst`` (container from ``dst``'s suffix).

    Frame count, timestamps, display matrix and audio tracks are kept as the module docstring
    says.  ``wire`` is how frames travel: ``raw`` RGB24 (lossless) or ``jpeg`` (less bandwidth).
    ``progress`` is an optional tqdm-like object whose ``update(1)`` is called per frame.
    Raises ``ValueError`` for an unusable ``dst`` or an input without video, and whatever the
    stream raises; ``dst`` is then left as it was.
    """
    import av

    dst = Path(dst)
    muxer = output_format(dst)
    fd, tmp_name = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.stem}.", suffix=f".partial{dst.suffix}")
    os.close(fd)
    try:
        with av.open(str(src)) as inp, av.open(tmp_name, "w", format=muxer) as out:
            report = _transcode(client, inp, out, style, strength, process_max_side, wire, progress)
        os.replace(tmp_name, dst)
        return report
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)


def _transcode(client: Client, inp: Any, out: Any, style: StyleSpec, strength: float | None,
               process_max_side: int, wire: str, progress: Any) -> VideoReport:
    import av

    if not inp.streams.video:
        raise ValueError(f"{inp.name} has no video stream")
    vin = inp.streams.video[0]
    vin.thread_type = "AUTO"
    codec = out.default_video_codec
    formats = [f.name for f in av.Codec(codec, "w").video_formats or ()]
    pix_fmt = "yuv420p" if not formats or "yuv420p" in formats else formats[0]  # 8-bit 4:2:0 plays anywhere
    width, height = vin.codec_context.width, vin.codec_context.height
    if pix_fmt == "yuv420p":  # 4:2:0 needs even sides: crop the last column/row, never rescale
        width, height = width - width % 2, height - height % 2
    vout = out.add_stream(codec, rate=vin.average_rate or vin.guessed_rate or Fraction(30))
    vout.width, vout.height, vout.pix_fmt = width, height, pix_fmt
    vout.codec_context.time_base = vin.time_base  # each frame keeps its own timestamp
    vout.time_base = vin.time_base
    audio, dropped = _plan_tracks(inp, vin, out)
    by_index = {a.index: a for a in audio}
    timing: deque[int] = deque()
    step = _tick(vin)

    # The SDK pulls frames on its own thread while this one encodes and muxes: libav objects are
    # not thread-safe, so each side holds ``libav``; and that thread may pull once more after the
    # last answer, when the caller closes the input: ``finished`` stops it touching the container.
    libav = threading.Lock()
    finished = threading.Event()

    def decoded() -> Iterator[Any]:
        packets = inp.demux(vin, *(inp.streams[i] for i in by_index))
        while True:
            with libav:
                packet = None if finished.is_set() else next(packets, None)
                if packet is None:
                    return
                if packet.stream.index in by_index:
                    by_index[packet.stream.index].take(packet)
                    continue
                frames = packet.decode()
            yield from frames

    frames = decoded()
    first = next(frames, None)
    if first is None:
        raise ValueError(f"{inp.name}: its video track has no frames")
    matrix = _display_matrix(first)  # before the first frame is encoded (the header is written then)
    if matrix is not None:
        vout.set_display_matrix(matrix)

    def pixels() -> Iterator[Any]:
        last = None
        for frame in chain([first], frames):
            pts = frame.pts if frame.pts is not None else (0 if last is None else last + step)
            last = pts if last is None else max(pts, last + 1)  # strictly increasing for the muxer
            timing.append(last)
            with libav:
                array = frame.to_ndarray(format="rgb24")[:height, :width]
            yield array if wire == "raw" else _jpeg(array)

    count = 0
    try:
        for result in client.stream(pixels(), style, strength=strength, output="raw" if wire == "raw" else "jpeg",
                                    mode="every_frame", process_max_side=process_max_side):
            frame = av.VideoFrame.from_ndarray(result.raise_for_status().to_array(), format="rgb24")
            frame.pts, frame.time_base = timing.popleft(), vin.time_base
            with libav:
                out.mux(vout.encode(frame))
                for track in audio:
                    track.write(out)
            count += 1
            if progress is not None:
                progress.update(1)
    finally:
        with libav:
            finished.set()
    out.mux(vout.encode(None))
    for track in audio:
        track.finish(out)
    tracks = sorted([a.report() for a in audio] + dropped, key=lambda t: t.index)
    rotation = int(first.rotation) if matrix is not None else 0
    return VideoReport(frames=count, width=width, height=height, rotation=rotation, tracks=tuple(tracks))


def _tick(stream: Any) -> int:
    """One frame's duration in the stream's time base (for frames that carry no timestamp)."""
    rate = stream.average_rate or stream.guessed_rate or Fraction(30)
    return max(1, round(1 / (rate * stream.time_base))) if stream.time_base else 1


def _jpeg(pixels: np.ndarray, quality: int = 95) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
