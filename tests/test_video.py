"""``stylecast video`` and ``stylize_video`` on clips generated here with PyAV: rotation, variable
frame rate, several audio tracks, odd sizes, 10-bit, a run that fails half way."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import encoded, picture
from typer.testing import CliRunner

from stylecast.client import Client
from stylecast.client.cli import app
from stylecast.client.video import stylize_video

MS = Fraction(1, 1000)


@dataclass
class Clip:
    path: Path
    times: list[Fraction]                                   # each video frame's time, seconds
    audio_packets: list[int] = field(default_factory=list)  # per audio track, in stream order


def make_clip(path: Path, *, size: tuple[int, int] = (96, 64), pix_fmt: str = "yuv420p",
              times_ms: list[int] | None = None, rotation: int | None = None,
              audio: tuple[tuple[str, int], ...] = (("aac", 16000),)) -> Clip:
    """An H.264 clip (frames at ``times_ms``, default 10 at 10 fps) with one tone per ``audio``
    entry (codec, sample rate) as long as the video, and an optional display rotation."""
    times_ms = times_ms if times_ms is not None else [100 * i for i in range(10)]
    seconds = (times_ms[-1] + 100) / 1000
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=30)
        video.width, video.height, video.pix_fmt = *size, pix_fmt
        video.codec_context.time_base = video.time_base = MS
        if rotation is not None:
            video.set_display_rotation(rotation)
        tracks = [out.add_stream(codec, rate=rate) for codec, rate in audio]
        for i, t in enumerate(times_ms):
            frame = av.VideoFrame.from_ndarray(picture(*size, seed=i), format="rgb24")
            frame.pts, frame.time_base = t, MS
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        for k, track in enumerate(tracks):
            rate = track.codec_context.sample_rate
            n = int(rate * seconds)
            tone = (0.3 * np.sin(2 * np.pi * (440 + 110 * k) * np.arange(n) / rate)).astype(np.float32)[None]
            for start in range(0, n, 1152):
                frame = av.AudioFrame.from_ndarray(tone[:, start:start + 1152], format="flt", layout="mono")
                frame.sample_rate, frame.pts = rate, start
                out.mux(track.encode(frame))
            out.mux(track.encode(None))
    with av.open(str(path)) as clip:
        times = [f.pts * f.time_base for f in clip.decode(video=0)]
    return Clip(path, times, audio_packets(path))


def audio_packets(path: Path) -> list[int]:
    """Packets per audio track, in stream order."""
    with av.open(str(path)) as c:
        counts = dict.fromkeys((s.index for s in c.streams.audio), 0)
        for packet in c.demux(*c.streams.audio) if counts else ():
            if packet.dts is not None:
                counts[packet.stream.index] += 1
    return list(counts.values())


def probe(path: Path) -> dict:
    """What a player sees: frame times, rotation and coded size, and per-track codecs/packets."""
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
        info = {"times": [f.pts * f.time_base for f in frames], "rotation": {f.rotation for f in frames},
                "size": {(f.width, f.height) for f in frames}, "formats": {f.format.name for f in frames},
                "pixels": [f.to_ndarray(format="rgb24") for f in frames],
                "tracks": [(s.type, s.codec_context.codec.canonical_name) for s in c.streams]}
    info["audio_packets"] = audio_packets(path)
    return info


@pytest.fixture
def style_png(tmp_path: Path) -> Path:
    path = tmp_path / "style.png"
    path.write_bytes(encoded(picture(120, 100, seed=21)))
    return path


async def run_video(server, src: Path, dst: Path, style_png: Path, **kw):
    def run():
        with Client(f"127.0.0.1:{server.port}") as client:
            return stylize_video(client, src, dst, client.register_style(style_png).id, **kw)

    return await asyncio.to_thread(run)


async def cli(*args) -> tuple[int, str]:
    result = await asyncio.to_thread(CliRunner().invoke, app, [str(a) for a in args])
    return result.exit_code, result.output


async def test_rotation_display_matrix_is_kept(server, tmp_path, style_png) -> None:
    clip = await asyncio.to_thread(make_clip, tmp_path / "phone.mp4", rotation=90)
    assert probe(clip.path)["rotation"] == {90}
    report = await run_video(server, clip.path, tmp_path / "out.mp4", style_png)
    out = probe(tmp_path / "out.mp4")
    assert out["rotation"] == {90} and report.rotation == 90  # plays upright, like the input
    assert out["size"] == {(96, 64)}  # pixels stay as coded: the matrix turns them, not the encoder
    assert out["times"] == clip.times and report.frames == 10


async def test_variable_frame_rate_keeps_every_frames_timestamp(server, tmp_path, style_png) -> None:
    # bursts at 60 fps with a gap: about 11 fps on average
    times = [0, 33, 66, 100, 116, 133, 150, 166, 400, 433, 466, 500, 516, 533, 900]
    clip = await asyncio.to_thread(make_clip, tmp_path / "vfr.mp4", times_ms=times)
    assert clip.times == [t * MS for t in times]
    report = await run_video(server, clip.path, tmp_path / "out.mp4", style_png)
    out = probe(tmp_path / "out.mp4")
    assert out["times"] == clip.times and report.frames == len(times)
    assert out["audio_packets"] == clip.audio_packets


async def test_every_audio_track_is_kept(server, tmp_path, style_png) -> None:
    clip = await asyncio.to_thread(make_clip, tmp_path / "two.mp4", audio=(("aac", 16000), ("mp3", 22050)))
    assert len(clip.audio_packets) == 2 and min(clip.audio_packets) > 0
    code, out = await cli("video", clip.path, "--style", style_png, "-o", tmp_path / "out.mp4",
                          "--target", f"127.0.0.1:{server.port}")
    assert code == 0, out
    assert "10 frames, audio remuxed" in out and "dropped" not in out
    result = probe(tmp_path / "out.mp4")
    assert result["tracks"] == [("video", "h264"), ("audio", "aac"), ("audio", "mp3")]
    assert result["audio_packets"] == clip.audio_packets and result["times"] == clip.times


async def test_audio_the_container_cannot_hold_is_reported_as_dropped(server, tmp_path, style_png) -> None:
    clip = await asyncio.to_thread(make_clip, tmp_path / "two.mp4", audio=(("aac", 16000), ("mp3", 22050)))
    code, out = await cli("video", clip.path, "--style", style_png, "-o", tmp_path / "out.gif",
                          "--target", f"127.0.0.1:{server.port}")
    assert code == 0, out
    assert "track 1 (audio, aac) dropped: the gif container holds no audio" in out
    assert "track 2 (audio, mp3) dropped: the gif container holds no audio" in out
    assert "audio remuxed" not in out
    result = probe(tmp_path / "out.gif")
    assert result["tracks"] == [("video", "gif")] and len(result["times"]) == 10


async def test_audio_re_encoded_when_the_container_needs_another_codec(server, tmp_path, style_png) -> None:
    clip = await asyncio.to_thread(make_clip, tmp_path / "a.mp4", audio=(("aac", 16000), ("aac", 22050)))
    report = await run_video(server, clip.path, tmp_path / "out.webm", style_png)
    assert [(t.index, t.outcome, t.codec_out) for t in report.tracks] == [(1, "re-encoded", "opus"),
                                                                           (2, "re-encoded", "opus")]
    result = probe(tmp_path / "out.webm")
    assert [t for t in result["tracks"] if t[0] == "audio"] == [("audio", "opus"), ("audio", "opus")]
    assert all(n > 0 for n in result["audio_packets"]) and len(result["times"]) == 10


async def test_odd_sizes_are_cropped_to_even_never_rescaled(server, tmp_path, style_png) -> None:
    clip = await asyncio.to_thread(make_clip, tmp_path / "odd.mp4", size=(97, 65), pix_fmt="yuv444p")
    report = await run_video(server, clip.path, tmp_path / "out.mp4", style_png)
    out = probe(tmp_path / "out.mp4")
    assert out["size"] == {(96, 64)} and (report.width, report.height) == (96, 64)
    assert out["times"] == clip.times and report.frames == 10


async def test_ten_bit_input(server, tmp_path, style_png) -> None:
    clip = await asyncio.to_thread(make_clip, tmp_path / "ten.mp4", pix_fmt="yuv420p10le")
    report = await run_video(server, clip.path, tmp_path / "out.mp4", style_png)
    out = probe(tmp_path / "out.mp4")
    assert out["formats"] == {"yuv420p"} and out["size"] == {(96, 64)}
    assert out["times"] == clip.times and report.frames == 10
    with av.open(str(clip.path)) as c:
        first = next(c.decode(video=0)).to_ndarray(format="rgb24")
    assert np.abs(out["pixels"][0].astype(np.float32) - first).mean() > 10  # stylized, not passed through


async def test_a_failed_run_leaves_no_file_and_keeps_the_old_one(server, tmp_path, style_png) -> None:
    clip = await asyncio.to_thread(make_clip, tmp_path / "clip.mp4")
    (tmp_path / "renders").mkdir()
    dst = tmp_path / "renders" / "out.mp4"
    dst.write_bytes(b"the previous render")

    class Interrupt(Exception):
        pass

    class Progress:  # the user presses Ctrl-C after three frames
        n = 0

        def update(self, k: int) -> None:
            self.n += k
            if self.n == 3:
                raise Interrupt

    with pytest.raises(Interrupt):
        await run_video(server, clip.path, dst, style_png, progress=Progress())
    assert dst.read_bytes() == b"the previous render"
    assert [p.name for p in dst.parent.iterdir()] == ["out.mp4"]  # no temporary file left either

    dst.unlink()
    with pytest.raises(Interrupt):
        await run_video(server, clip.path, dst, style_png, progress=Progress())
    assert not dst.exists() and not list(dst.parent.iterdir())


@pytest.mark.parametrize("name", ["out", "out.txt", "out.png"])
async def test_cli_refuses_an_output_without_a_video_container_before_sending(tmp_path, style_png, name) -> None:
    clip = await asyncio.to_thread(make_clip, tmp_path / "clip.mp4")
    # nothing listens on the target: an attempt to send would fail with UNAVAILABLE instead
    code, out = await cli("video", clip.path, "--style", style_png, "-o", tmp_path / name, "--target", "127.0.0.1:9")
    assert code == 1 and "Traceback" not in out and len(out.strip().splitlines()) == 1, out
    assert ".mp4" in out and "UNAVAILABLE" not in out
    assert not (tmp_path / name).exists()
