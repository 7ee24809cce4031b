"""Video files through a stylize stream: PyAV decode → ``Client.stream`` (EVERY_FRAME) → encode.

Audio is passed through: its packets are remuxed unchanged when the output
container accepts the codec, and re-encoded to the container's default audio
codec otherwise.
"""

from __future__ import annotations

import io
import queue
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from stylecast.client.messages import StyleSpec
from stylecast.client.sdk import Client


@dataclass(frozen=True)
class VideoReport:
    frames: int
    audio: str  # "none" | "remuxed" | "re-encoded"


class _AudioPass:
    """Carries the input's first audio stream into the output.  ``take`` runs on the decoding
    thread; ``write`` on the thread that owns the output container."""

    def __init__(self, in_stream: Any, out: Any) -> None:
        self._in = in_stream
        self._items: queue.SimpleQueue[Any] = queue.SimpleQueue()
        codec = in_stream.codec_context.name
        if codec in out.supported_codecs:
            self.mode = "remuxed"
            self.stream = out.add_stream_from_template(in_stream)
        else:
            self.mode = "re-encoded"
            self.stream = out.add_stream(out.default_audio_codec, rate=in_stream.codec_context.sample_rate)

    def take(self, packet: Any) -> None:
        if packet.dts is None:  # demuxer flush packet
            if self.mode == "re-encoded":
                for frame in packet.decode():
                    self._items.put(frame)
            return
        if self.mode == "remuxed":
            self._items.put(packet)
        else:
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


def stylize_video(client: Client, src: str | Path, dst: str | Path, style: StyleSpec, *,
                  strength: float | None = None, process_max_side: int = 0, wire: str = "raw",
                  progress: Any = None) -> VideoReport:
    """Stylize every frame of ``src`` into ``dst`` (same size, rate and frame count; audio kept).

    ``wire`` is how frames travel: ``raw`` RGB24 (lossless) or ``jpeg`` (less bandwidth).
    ``progress`` is an optional tqdm-like object whose ``update(1)`` is called per frame.
    """
    import av

    inp = av.open(str(src))
    out = av.open(str(dst), "w")
    try:
        vin = inp.streams.video[0]
        vin.thread_type = "AUTO"
        ain = inp.streams.audio[0] if inp.streams.audio else None
        rate = vin.average_rate or vin.guessed_rate or Fraction(30)
        codec = out.default_video_codec if out.default_video_codec != "none" else "mpeg4"
        vout = out.add_stream(codec, rate=rate)
        width, height = vin.codec_context.width, vin.codec_context.height
        vout.width, vout.height = width - width % 2, height - height % 2  # 4:2:0 needs even sizes
        vout.pix_fmt = "yuv420p"
        audio = _AudioPass(ain, out) if ain is not None else None
        timing: deque[tuple[int | None, Fraction | None]] = deque()

        def frames() -> Iterator[Any]:
            streams = [vin] + ([ain] if ain is not None else [])
            for packet in inp.demux(*streams):
                if packet.stream.type == "audio":
                    audio.take(packet)  # type: ignore[union-attr]
                    continue
                for frame in packet.decode():
                    timing.append((frame.pts, frame.time_base))
                    pixels = frame.to_ndarray(format="rgb24")
                    yield pixels if wire == "raw" else _jpeg(pixels)

        count = 0
        output = "raw" if wire == "raw" else "jpeg"
        for result in client.stream(frames(), style, strength=strength, output=output,
                                    mode="every_frame", process_max_side=process_max_side):
            frame = av.VideoFrame.from_ndarray(result.raise_for_status().to_array(), format="rgb24")
            frame.pts, frame.time_base = timing.popleft()
            out.mux(vout.encode(frame))
            if audio is not None:
                audio.write(out)
            count += 1
            if progress is not None:
                progress.update(1)
        out.mux(vout.encode(None))
        if audio is not None:
            audio.finish(out)
        return VideoReport(frames=count, audio=audio.mode if audio is not None else "none")
    finally:
        out.close()
        inp.close()


def _jpeg(pixels: np.ndarray, quality: int = 95) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
