"""Shared fixtures: a tiny exported model package and a real in-process server on port 0.

The tiny package is a randomly initialised small model exported by the project's
own exporter (``tiny_test_package``: a fixture for serving mechanics, never the
built-in model).  It is built once in a subprocess (so the test process never imports TensorFlow) and
cached under pytest's cache, keyed by the exporter's source.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from stylecast.server.app import RunningServer, start
from stylecast.server.config import ServerConfig
from stylecast.v1 import stylecast_pb2 as pb
from stylecast.v1 import stylecast_pb2_grpc as pb_grpc

REPO = Path(__file__).resolve().parents[1]
MODEL_SOURCES = ("model/export.py", "model/networks.py", "backends/package.py")
CHANNEL_OPTIONS = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]


def _cached_tiny(request: pytest.FixtureRequest, version: str, formats: tuple[str, ...] | None, seed: int) -> Path:
    """Export ``tiny/VERSION`` once per exporter source, in a subprocess (the test process never
    imports TensorFlow), into a scratch folder renamed into place (concurrent runs never see half)."""
    digest = hashlib.sha256(b"".join((REPO / f).read_bytes() for f in MODEL_SOURCES)).hexdigest()[:12]
    root = request.config.cache.mkdir(f"stylecast-tiny{version}-{digest}")
    if not (root / "tiny" / version / "manifest.json").is_file():
        scratch = Path(tempfile.mkdtemp(dir=root))
        code = ("import sys; from stylecast.model.export import FORMATS, tiny_test_package; "
                f"tiny_test_package(sys.argv[1], {formats!r} or FORMATS, seed={seed}, version={version!r})")
        proc = subprocess.run([sys.executable, "-c", code, str(scratch)], capture_output=True, text=True)
        assert proc.returncode == 0, f"tiny package export failed:\n{proc.stderr[-4000:]}"
        (root / "tiny").mkdir(exist_ok=True)
        try:
            (scratch / "tiny" / version).rename(root / "tiny" / version)
        except OSError:  # another run got there first
            assert (root / "tiny" / version / "manifest.json").is_file()
        shutil.rmtree(scratch, ignore_errors=True)
    return root


@pytest.fixture(scope="session")
def tiny_models_dir(request: pytest.FixtureRequest) -> Path:
    """A models dir holding ``tiny/1`` (every format)."""
    return _cached_tiny(request, "1", None, 0)


@pytest.fixture(scope="session")
def tiny_v2_dir(request: pytest.FixtureRequest) -> Path:
    """A folder holding ``tiny/2``: another randomly initialised tiny model (TFLite formats only),
    to upload as a new version."""
    return _cached_tiny(request, "2", ("tflite-fp32", "tflite-int8"), 1)


def make_config(models_dir: Path, tmp_path: Path, **overrides) -> ServerConfig:
    values = dict(port=0, host="127.0.0.1", metrics_port=0, backend="litert", format="tflite-fp32",
                  models_dir=str(models_dir), styles_db=str(tmp_path / "styles.db"), workers=2, threads=1,
                  grace_s=5.0, upload_dir=str(tmp_path / "uploads"))
    return ServerConfig(**(values | overrides))


@pytest.fixture
async def server_factory(tiny_models_dir: Path, tmp_path: Path):
    """Start real servers (``**overrides`` on the test config); all are stopped at teardown."""
    started: list[RunningServer] = []

    async def factory(**overrides) -> RunningServer:
        running = await start(make_config(tiny_models_dir, tmp_path, **overrides))
        started.append(running)
        return running

    yield factory
    for running in started:
        await running.stop(1.0)


@pytest.fixture
async def server(server_factory) -> RunningServer:
    return await server_factory()


@pytest.fixture
async def stub(server: RunningServer):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=CHANNEL_OPTIONS) as channel:
        yield pb_grpc.StyleTransferStub(channel)


# --------------------------------------------------------------------- images

def picture(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth, deterministic colour image (H×W×3 uint8) with some structure."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    phases = rng.uniform(0, 2 * np.pi, 3)
    freq = rng.uniform(0.02, 0.15, 3)
    chans = [127.5 + 127.5 * np.sin(freq[c] * x + phases[c]) * np.cos(freq[(c + 1) % 3] * y) for c in range(3)]
    return np.stack(chans, axis=-1).astype(np.uint8)


def encoded(img: np.ndarray, fmt: str = "PNG", **save) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, fmt, **save)
    return buf.getvalue()


def raw_image(img: np.ndarray) -> pb.Image:
    return pb.Image(data=img.tobytes(), pixel_format=pb.PIXEL_FORMAT_RGB24, width=img.shape[1], height=img.shape[0])


async def register(stub, img: np.ndarray, name: str = "", chunk: int = 1 << 14) -> pb.Style:
    data = encoded(img)

    async def uploads():
        for i in range(0, len(data), chunk):
            yield pb.StyleUpload(name=name if i == 0 else "", chunk=data[i:i + chunk])

    return (await stub.RegisterStyle(uploads())).style


def decode_result(image: pb.Image) -> np.ndarray:
    if image.pixel_format == pb.PIXEL_FORMAT_RGB24:
        return np.frombuffer(image.data, np.uint8).reshape(image.height, image.width, 3)
    return np.asarray(Image.open(io.BytesIO(image.data)).convert("RGB"))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)
