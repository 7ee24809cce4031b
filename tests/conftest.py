"""Shared fixtures: a tiny exported model package and a real in-process server on port 0.

The tiny package is a randomly initialised small model exported by the project's
own exporter (``tiny_test_package``: a fixture for serving mechanics, never the
built-in model).  It is built once in a subprocess (so the test process never imports TensorFlow) and
cached under pytest's cache, keyed by the exporter's source.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
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


SUMMARY: dict[str, list[str]] = {}   # section title -> lines printed after the run (test_hostile's figures)


def pytest_terminal_summary(terminalreporter) -> None:
    for title, lines in SUMMARY.items():
        terminalreporter.section(title)
        for line in lines:
            terminalreporter.write_line(line)


def make_config(models_dir: Path, tmp_path: Path, **overrides) -> ServerConfig:
    values = dict(port=0, host="127.0.0.1", metrics_port=0, backend="litert", format="tflite-fp32",
                  models_dir=str(models_dir), style_store=f"sqlite:///{tmp_path / 'styles.db'}", workers=2, threads=1,
                  grace_s=5.0, upload_dir=str(tmp_path / "uploads"))
    return ServerConfig(**(values | overrides))


@pytest.fixture
async def server_factory(tiny_models_dir: Path, tmp_path: Path):
    """Start real servers (``**overrides`` on the test config); all are stopped at teardown."""
    async with running_servers(tiny_models_dir, tmp_path) as factory:
        yield factory


@contextlib.asynccontextmanager
async def running_servers(models_dir: Path, tmp_path: Path):
    """A factory starting real servers on ``models_dir`` (``**overrides`` on the test config);
    every one is stopped on exit."""
    started: list[RunningServer] = []

    async def factory(**overrides) -> RunningServer:
        running = await start(make_config(models_dir, tmp_path, **overrides))
        started.append(running)
        return running

    try:
        yield factory
    finally:
        for running in started:
            await running.stop(1.0)


async def status_of(call) -> tuple[grpc.StatusCode, str]:
    """A finished call's status code and details (OK, "" when it succeeded)."""
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details()
    return grpc.StatusCode.OK, ""


@pytest.fixture
async def server(server_factory) -> RunningServer:
    return await server_factory()


@pytest.fixture
async def stub(server: RunningServer):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=CHANNEL_OPTIONS) as channel:
        yield pb_grpc.StyleTransferStub(channel)


# --------------------------------------------------------------------- Redis

@contextlib.contextmanager
def exec_serve(args: list[str], env: dict[str, str] | None = None):
    """``stylecast serve ARGS --port 0`` as a real process (it execs into ``python -m
    stylecast.server``); yields (process, gRPC port) once it reports serving ``tiny:1``, and stops
    it with SIGTERM (killed after 30 s) on leaving."""
    proc = subprocess.Popen([sys.executable, "-m", "stylecast.client", "serve", "--port", "0", *args],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        port = None
        for line in proc.stderr:
            if match := re.search(r"serving tiny:1 with litert on .*:(\d+)$", line.strip()):
                port = int(match.group(1))
                break
        assert port, "server never reported its port"
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisProcess:
    """A real ``redis-server`` on a free loopback port, with AOF (``appendfsync always``) in
    ``workdir``: :meth:`kill` (SIGKILL) and :meth:`start` again on the same port keep the data.

    ``tls=True`` also opens a TLS port (a self-signed certificate for 127.0.0.1, made with the
    ``openssl`` command) and requires ``password``: :attr:`tls_url` is a ``rediss://`` URL
    without the password, which clients pass separately."""

    def __init__(self, workdir: Path, *, tls: bool = False, password: str = "") -> None:
        self.workdir, self.port = workdir, free_port()
        self.tls_port = free_port() if tls else 0
        self.password = password
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def tls_url(self) -> str:
        return f"rediss://127.0.0.1:{self.tls_port}/0?ssl_ca_certs={self.workdir / 'cert.pem'}"

    def _tls_args(self) -> list[str]:
        cert, key = self.workdir / "cert.pem", self.workdir / "key.pem"
        if not cert.exists():
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                            "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
        return ["--tls-port", str(self.tls_port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
                "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"]

    def _command(self, command: bytes, expect: bytes) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as conn:
            if self.password:
                conn.sendall(b"AUTH " + self.password.encode() + b"\r\n")
                assert conn.recv(64).startswith(b"+OK")
            conn.sendall(command + b"\r\n")
            return conn.recv(64).startswith(expect)

    def start(self) -> RedisProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.workdir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no",
             "--logfile", str(self.workdir / "redis.log"),
             *(self._tls_args() if self.tls_port else []),
             *(["--requirepass", self.password] if self.password else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while True:  # wait until it answers PING
            try:
                if self._command(b"PING", b"+PONG"):
                    return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"redis-server did not start: {self.proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def flush(self) -> None:
        assert self._command(b"FLUSHALL", b"+OK")


def redis_server_or_skip() -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed (make test installs Debian's redis-server)")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory):
    """One real redis-server for the session; tests that use it call ``flush`` first (``redis_url``)."""
    redis_server_or_skip()
    proc = RedisProcess(tmp_path_factory.mktemp("redis")).start()
    yield proc
    proc.kill()


@pytest.fixture
def redis_url(redis_server: RedisProcess) -> str:
    """The URL of an empty database on the session's redis-server."""
    redis_server.flush()
    return redis_server.url


@pytest.fixture(scope="session")
def tls_redis_server(tmp_path_factory: pytest.TempPathFactory):
    """A real redis-server with TLS and a password (``tls_url``, ``password``)."""
    redis_server_or_skip()
    if shutil.which("openssl") is None:
        pytest.skip("openssl command not installed (makes the test certificate)")
    proc = RedisProcess(tmp_path_factory.mktemp("redis-tls"), tls=True, password="s3cret").start()
    yield proc
    proc.kill()


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


async def register(stub, img: np.ndarray, name: str = "", chunk: int = 1 << 14, metadata=None) -> pb.Style:
    data = encoded(img)

    async def uploads():
        for i in range(0, len(data), chunk):
            yield pb.StyleUpload(name=name if i == 0 else "", chunk=data[i:i + chunk])

    return (await stub.RegisterStyle(uploads(), metadata=metadata)).style


def decode_result(image: pb.Image) -> np.ndarray:
    if image.pixel_format == pb.PIXEL_FORMAT_RGB24:
        return np.frombuffer(image.data, np.uint8).reshape(image.height, image.width, 3)
    return np.asarray(Image.open(io.BytesIO(image.data)).convert("RGB"))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)
