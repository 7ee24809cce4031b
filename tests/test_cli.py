"""The ``stylecast`` CLI against a real in-process server (commands run on a worker thread)."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import encoded, exec_serve, picture
from PIL import Image
from typer.testing import CliRunner

from stylecast.client import Client
from stylecast.client.cli import app


async def stylecast(*args: str) -> tuple[int, str]:
    """Run a CLI command without blocking the loop the server runs on."""
    result = await asyncio.to_thread(CliRunner().invoke, app, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture
def style_file(tmp_path: Path) -> Path:
    path = tmp_path / "brushy.png"
    path.write_bytes(encoded(picture(120, 100, seed=21)))
    return path


async def test_image_writes_a_stylized_jpeg_of_the_input_size(server, tmp_path, style_file) -> None:
    target = f"127.0.0.1:{server.port}"
    photo = tmp_path / "photo.jpg"
    Image.fromarray(picture(123, 77, seed=22)).save(photo, quality=95)

    code, out = await stylecast("image", photo, "--style", style_file, "-o", tmp_path / "out.jpg",
                                "--target", target)
    assert code == 0, out
    result = Image.open(tmp_path / "out.jpg")
    assert result.format == "JPEG" and result.size == (123, 77)
    original = np.asarray(Image.open(photo).convert("RGB"), np.float32)
    assert np.abs(np.asarray(result.convert("RGB"), np.float32) - original).mean() > 10  # it was restyled

    style_id = next(s.id for s in await asyncio.to_thread(lambda: list(Client(target).list_styles())))
    code, out = await stylecast("image", photo, "--style", style_id, "-o", tmp_path / "half.png",
                                "--strength", "0.5", "--size", "64", "--target", target)
    assert code == 0, out
    half = Image.open(tmp_path / "half.png")
    assert half.format == "PNG" and half.size == (123, 77)


async def test_client_errors_exit_1_with_the_status(server, tmp_path) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(encoded(picture(32, 32)))
    code, out = await stylecast("image", photo, "--style", "no-such-style", "-o", tmp_path / "x.jpg",
                                "--target", f"127.0.0.1:{server.port}")
    assert code == 1 and "NOT_FOUND" in out and "no-such-style" in out
    assert not (tmp_path / "x.jpg").exists()


NOWHERE = ("--target", "127.0.0.1:9")  # nothing listens: anything sent would fail with UNAVAILABLE


def one_line_error(code: int, out: str) -> str:
    """The CLI's answer to a mistake: exit status 1 and one line, no traceback."""
    assert code == 1 and "Traceback" not in out and len(out.strip().splitlines()) == 1, out
    assert "UNAVAILABLE" not in out, f"it tried to send: {out}"
    return out.strip()


@pytest.mark.parametrize("name, expected", [
    ("out", "needs an image suffix Pillow writes: .jpg, .png, .webp, .gif, .tiff, … (got no suffix)"),
    ("out.xyz", "needs an image suffix Pillow writes: .jpg, .png, .webp, .gif, .tiff, … (got .xyz)"),
    ("no-such-folder/out.jpg", "folder"),
])
async def test_image_output_mistakes_are_caught_before_sending(tmp_path, style_file, name, expected) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(encoded(picture(32, 32)))
    line = one_line_error(*await stylecast("image", photo, "--style", style_file, "-o", tmp_path / name, *NOWHERE))
    assert expected in line and not (tmp_path / name).exists()


async def test_a_mistyped_style_path_says_the_file_does_not_exist(tmp_path) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(encoded(picture(32, 32)))
    for style in ("brushy.pgn", "styles/brushy.png"):
        line = one_line_error(*await stylecast("image", photo, "--style", tmp_path / style, "-o",
                                               tmp_path / "x.jpg", *NOWHERE))
        assert line.endswith(f"{tmp_path / style}: no such file") and "register" not in line


async def test_a_gif_input_is_stylized_and_an_animated_one_points_to_video(server, tmp_path, style_file) -> None:
    target = ("--target", f"127.0.0.1:{server.port}")
    still = tmp_path / "still.gif"
    Image.fromarray(picture(50, 40, seed=24)).convert("P").save(still)
    code, out = await stylecast("image", still, "--style", style_file, "-o", tmp_path / "still.png", *target)
    assert code == 0, out
    assert Image.open(tmp_path / "still.png").size == (50, 40)
    code, out = await stylecast("image", still, "--style", style_file, "-o", tmp_path / "still-out.gif", *target)
    assert code == 0, out  # a suffix the server does not encode: the lossless answer is converted by Pillow
    with Image.open(tmp_path / "still-out.gif") as written:
        assert written.format == "GIF" and written.size == (50, 40)

    animated = tmp_path / "anim.gif"
    frames = [Image.fromarray(picture(50, 40, seed=s)).convert("P") for s in range(3)]
    frames[0].save(animated, save_all=True, append_images=frames[1:], duration=100)
    line = one_line_error(*await stylecast("image", animated, "--style", style_file, "-o", tmp_path / "a.png",
                                           *NOWHERE))
    assert "animated (3 frames)" in line and "stylecast video" in line and "pixel_format" not in line

    text = tmp_path / "notes.txt"
    text.write_text("not a picture")
    line = one_line_error(*await stylecast("image", text, "--style", style_file, "-o", tmp_path / "n.png", *NOWHERE))
    assert "is not an image" in line and "pixel_format" not in line


async def test_styles_add_list_rm(server, style_file) -> None:
    target = ("--target", f"127.0.0.1:{server.port}")
    code, out = await stylecast("styles", "add", style_file, "--name", "brushy", *target)
    assert code == 0 and out.rstrip().endswith("\tregistered"), out
    style_id = out.split("\t")[0]
    assert re.fullmatch(r"[0-9a-f]{64}", style_id)
    code, out = await stylecast("styles", "add", style_file, *target)
    assert code == 0 and out.startswith(style_id) and "already registered" in out

    code, out = await stylecast("styles", "list", *target)
    assert code == 0 and out.splitlines()[0].split("\t")[:2] == [style_id, "brushy"]
    code, out = await stylecast("styles", "rm", style_id, *target)
    assert code == 0 and style_id in out
    code, out = await stylecast("styles", "rm", style_id, *target)
    assert code == 1 and "no style" in out
    code, out = await stylecast("styles", "list", *target)
    assert code == 0 and out.strip() == ""


def make_clip(path: Path, frames: int = 10, size: tuple[int, int] = (96, 64), fps: int = 10,
              rate: int = 16000) -> int:
    """An H.264 + AAC clip with moving content and a tone; returns its audio packet count."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = *size, "yuv420p"
        audio = out.add_stream("aac", rate=rate)
        for i in range(frames):
            out.mux(video.encode(av.VideoFrame.from_ndarray(picture(*size, seed=i), format="rgb24")))
        out.mux(video.encode(None))
        n = rate * frames // fps
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)).astype(np.float32)[None]
        for start in range(0, n, 1024):
            frame = av.AudioFrame.from_ndarray(tone[:, start:start + 1024], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = rate, start
            out.mux(audio.encode(frame))
        out.mux(audio.encode(None))
    with av.open(str(path)) as clip:
        return sum(1 for p in clip.demux(audio=0) if p.dts is not None)


async def test_video_keeps_frame_count_and_passes_audio_through(server, tmp_path, style_file) -> None:
    clip, out_path = tmp_path / "clip.mp4", tmp_path / "styled.mp4"
    audio_packets = await asyncio.to_thread(make_clip, clip)
    code, out = await stylecast("video", clip, "--style", style_file, "-o", out_path,
                                "--target", f"127.0.0.1:{server.port}")
    assert code == 0, out
    assert "10 frames, audio remuxed" in out
    with av.open(str(out_path)) as result:
        assert [s.type for s in result.streams] == ["video", "audio"]
        assert result.streams.video[0].average_rate == 10
        assert result.streams.audio[0].codec_context.name == "aac"
        assert sum(1 for p in result.demux(audio=0) if p.dts is not None) == audio_packets
    with av.open(str(out_path)) as result, av.open(str(clip)) as source:
        frames = [f.to_ndarray(format="rgb24") for f in result.decode(video=0)]
        originals = [f.to_ndarray(format="rgb24") for f in source.decode(video=0)]
    assert len(frames) == 10 and frames[0].shape == (64, 96, 3)
    assert np.abs(frames[3].astype(np.float32) - originals[3]).mean() > 10


async def test_bench_reports_json(server) -> None:
    code, out = await stylecast("bench", "--streams", "2", "--seconds", "1", "--warmup", "0.3", "--size", "64",
                                "--json", "--target", f"127.0.0.1:{server.port}")
    assert code == 0, out
    report = json.loads(out.strip().splitlines()[-1])
    assert report["streams"] == 2 and report["frames"] > 0 and report["fps"] > 0 and report["errors"] == 0
    assert 0 < report["p50_ms"] <= report["p99_ms"]


def test_help_is_light() -> None:
    code = ("import sys, stylecast.client.cli as cli; cli.app(['--help'], standalone_mode=False); "
            "heavy = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'av', 'keras') "
            "or m.startswith('stylecast.server')]; print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout and "video" in out.stdout and "styles" in out.stdout


def test_serve_command_passes_its_flags_to_the_server(tiny_models_dir, tmp_path) -> None:
    args = ["--metrics-port", "0", "--backend", "litert", "--format", "tflite-fp32", "--threads", "1",
            "--models-dir", str(tiny_models_dir), "--style-store", f"sqlite:///{tmp_path / 'cli.db'}"]
    with exec_serve(args) as (proc, port):
        with Client(f"127.0.0.1:{port}") as client:
            style = client.register_style(picture(64, 64, seed=23), name="via-cli")
        assert (tmp_path / "cli.db").exists() and style.created
        # the same process, exec'd into a server without the CLI's libraries (typer, pydantic)
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[1:3] == [b"-m", b"stylecast.server"], cmdline
        libraries = Path(f"/proc/{proc.pid}/maps").read_text()
        assert "pydantic_core" not in libraries and "cygrpc" in libraries
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


MAGENTA = Path(__file__).resolve().parents[1].parent / "shared" / "assets" / "models" / "magenta"


@pytest.mark.skipif(not (MAGENTA / "style_predict_quantized_256.tflite").is_file(),
                    reason="Magenta teacher files need <repo>/../shared/assets (not part of the project)")
def test_model_import_magenta_writes_a_package(tmp_path) -> None:
    from stylecast.backends.package import load_package

    args = ["model", "import-magenta", str(MAGENTA / "style_predict_quantized_256.tflite"),
            str(MAGENTA / "style_transfer_quantized_384.tflite"), "-o", str(tmp_path), "--name", "teacher"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    package = load_package(tmp_path / "teacher" / "1")
    package.verify(list(package.artifacts))
    assert list(package.artifacts) == ["tflite-int8"]
    again = CliRunner().invoke(app, args)  # refuses to overwrite without --overwrite
    assert again.exit_code == 1 and "exists: pass --overwrite" in again.output, again.output


@pytest.mark.skipif(not MAGENTA.is_dir(), reason=f"Magenta teacher files not found at {MAGENTA}")
def test_model_import_magenta_resizable_drops_the_fixed_size(tmp_path) -> None:
    from stylecast.backends.package import load_package

    args = ["model", "import-magenta", str(MAGENTA / "style_predict_quantized_256.tflite"),
            str(MAGENTA / "style_transfer_quantized_384.tflite"), "-o", str(tmp_path), "--resizable"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    stylize = load_package(tmp_path / "magenta" / "1").artifact("tflite-int8").endpoints["stylize"]
    assert stylize["fixed_hw"] is None


def test_models_upload_of_a_folder_without_a_manifest_says_what_to_give(tmp_path) -> None:
    """Refused before connecting (nothing listens at the target): exit 1 and what a package is."""
    folder = tmp_path / "tiny" / "1"
    folder.mkdir(parents=True)
    (folder / "model.tflite").write_bytes(b"weights")
    result = CliRunner().invoke(app, ["models", "upload", str(folder), "--target", "127.0.0.1:9"])
    assert result.exit_code == 1, result.output
    assert "holds no manifest.json" in result.output and "stylecast model export" in result.output
    assert "Traceback" not in result.output
