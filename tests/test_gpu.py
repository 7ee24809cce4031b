"""The GPU path: ORT-TensorRT, ORT-CUDA and TF-TRT.

Everywhere: the optimisation-profile and engine-cache logic, for real (against the built-in
model's declared input shapes), and each GPU backend refusing, through the real CLI and a
real server, with what is missing.  Marked ``gpu``: the backends themselves on a GPU, on the
built-in model, against ONNX Runtime on the CPU (no TensorFlow needed, so the lent GPU
machine runs them); each skips with the reason this machine cannot run it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from conftest import CHANNEL_OPTIONS, encoded, make_config, picture, register

from stylecast.backends import nvidia
from stylecast.backends.base import BackendError, BackendOptions, BackendUnavailable, create_backend
from stylecast.backends.cuda import CudaBackend, gpu_problem
from stylecast.backends.engines import (
    EngineCache, Profile, artifact_digest, cache_key, content_profile, fit_within, input_shapes)
from stylecast.backends.tensorrt import tensorrt_problem, trt_options
from stylecast.model import BUILTIN_DIR, BUILTIN_MODEL
from stylecast.model.preprocess import to_float
from stylecast.backends.package import load_package, locate_package
from stylecast.server.app import start
from stylecast.server.config import ConfigError, load_config
from stylecast.v1 import model_admin_pb2 as apb
from stylecast.v1 import model_admin_pb2_grpc as apb_grpc
from stylecast.v1 import stylecast_pb2 as pb
from stylecast.v1 import stylecast_pb2_grpc as pb_grpc

BUILTIN = locate_package(BUILTIN_DIR, BUILTIN_MODEL).path  # the real-time tier, latest version
RUNTIME = {"onnxruntime": "1.31.1", "tensorrt": "10.13.0", "gpu": "NVIDIA H200 sm_90"}
PROBLEMS = {"tensorrt": tensorrt_problem(), "cuda": gpu_problem("CUDAExecutionProvider")}


@pytest.fixture(scope="module")
def builtin():
    return load_package(BUILTIN)


# ------------------------------------------------------------------ optimisation profiles

def test_content_profile_spans_16_to_the_largest_side_tuned_for_the_first_size():
    p = content_profile([(288, 512), (1080, 1920)], max_batch=4)
    assert (p.min, p.opt, p.max) == ((1, 16, 16), (4, 288, 512), (4, 1920, 1920))
    p = content_profile([(37, 53)], 1)           # padded to 16, as the transformer sees frames
    assert (p.opt, p.max) == ((1, 48, 64), (1, 64, 64))
    for sizes, batch in (([], 1), ([(512, 512)], 0), ([(0, 5)], 1)):
        with pytest.raises(BackendError, match="optimisation profile needs"):
            content_profile(sizes, batch)
    with pytest.raises(BackendError, match="bad optimisation profile"):
        Profile((1, 16, 16), (1, 8, 16), (1, 32, 32))


def test_frames_inside_the_profile_run_as_they_are_and_larger_ones_scale_to_fit():
    p = content_profile([(512, 512)], 1)
    for h, w in ((512, 512), (500, 300), (16, 16), (1, 1), (497, 512)):
        assert fit_within(h, w, p) is None, (h, w)
    assert fit_within(1080, 1920, p) == (288, 512)
    assert fit_within(1920, 1080, p) == (512, 288)
    for h, w in ((513, 100), (4000, 30), (700, 701), (2160, 3840)):
        th, tw = fit_within(h, w, p)
        assert th % 16 == 0 and tw % 16 == 0 and 16 <= th <= 512 and 16 <= tw <= 512
        assert max(th, tw) > 512 - 16, (h, w, th, tw)                 # uses the profile, not less
        assert abs(th / tw - h / w) <= max(h / w, 1) * 16 / min(th, tw) + 1e-9 or min(th, tw) == 16


def test_input_shapes_follow_each_inputs_role():
    p = Profile((1, 16, 16), (4, 288, 512), (4, 1920, 1920))
    assert input_shapes(["N", "H", "W", 3], "content", p, 8) == ((1, 16, 16, 3), (4, 288, 512, 3), (4, 1920, 1920, 3))
    assert input_shapes([None, 100], "style", p, 8) == ((1, 100), (4, 100), (4, 100))
    assert input_shapes([-1, 1, 1, 100], "style", p, 8) == ((1, 1, 1, 100), (4, 1, 1, 100), (4, 1, 1, 100))
    assert input_shapes(["N", 256, 256, 3], "image", p, 8) == ((1, 256, 256, 3), (1, 256, 256, 3), (8, 256, 256, 3))
    assert input_shapes([1, 384, 384, 3], "content", p, 8) is None      # a fixed-shape file needs no profile
    with pytest.raises(BackendError, match="style input .* dim 1 is dynamic"):
        input_shapes(["N", "D"], "style", p, 8)


def test_profiles_for_the_builtin_models_declared_inputs(builtin):
    """The real ONNX files: every dynamic input gets a profile, in ORT's option syntax."""
    from stylecast.backends.endpoints import endpoints

    eps = endpoints(builtin.artifact("onnx"))
    p = content_profile([(288, 512), (1080, 1920)], 8)
    found = {}
    for ep in eps.values():
        roles = {model_name: role for role, model_name in ep.inputs.items()}
        session = ort.InferenceSession(str(builtin.file_path(ep.file)), providers=["CPUExecutionProvider"])
        for inp in session.get_inputs():
            found[roles[inp.name]] = input_shapes(inp.shape, roles[inp.name], p, 8)
    assert found["content"] == ((1, 16, 16, 3), (8, 288, 512, 3), (8, 1920, 1920, 3))
    assert found["style"][0][0] == 1 and found["style"][2][0] == 8 and np.prod(found["style"][2]) == 8 * builtin.style_dim
    assert found["image"] == ((1, 256, 256, 3), (1, 256, 256, 3), (8, 256, 256, 3))


def test_engines_profile_bounds_slice_batches_and_scale_large_frames(builtin):
    """The mixin the TensorRT backends share, on ONNX Runtime's CPU backend: a batch above the
    profile's runs in slices, a frame above it runs scaled to fit and back; both equal doing so by hand."""
    from stylecast.backends.engines import WithinProfile
    from stylecast.backends.fit import resize_bilinear
    from stylecast.backends.onnx import OnnxBackend

    class Bounded(WithinProfile, OnnxBackend):
        pass

    bounded, plain = Bounded(), create_backend("onnx")
    for backend in (bounded, plain):
        backend.load(builtin, BackendOptions(format="onnx", threads=2))
    bounded._profile = content_profile([(64, 64)], 2)
    vectors = np.random.default_rng(1).normal(size=(3, builtin.style_dim)).astype(np.float32)
    content = _content(3, 48, 64)
    np.testing.assert_allclose(bounded.stylize(content, vectors), plain.stylize(content, vectors), atol=1e-5)
    big = _content(1, 100, 150)
    assert fit_within(100, 150, bounded._profile) == (32, 64)
    out = bounded.stylize(big, vectors[:1])
    assert out.shape == big.shape
    by_hand = resize_bilinear(plain.stylize(resize_bilinear(big, (32, 64)), vectors[:1]), (100, 150))
    np.testing.assert_allclose(out, by_hand, atol=1e-5)
    assert np.abs(out - plain.stylize(big, vectors[:1])).mean() > 1e-3   # it did run at another size


def test_tensorrt_provider_options(tmp_path):
    shapes = {"content": ((1, 16, 16, 3), (2, 64, 64, 3), (2, 512, 512, 3)), "style": ((1, 100), (2, 100), (2, 100))}
    opts = trt_options(BackendOptions(format="onnx", device_id=1), tmp_path, shapes)
    assert opts["trt_profile_min_shapes"] == "content:1x16x16x3,style:1x100"
    assert opts["trt_profile_opt_shapes"] == "content:2x64x64x3,style:2x100"
    assert opts["trt_profile_max_shapes"] == "content:2x512x512x3,style:2x100"
    assert opts["trt_fp16_enable"] is True and opts["device_id"] == 1
    assert opts["trt_engine_cache_enable"] and opts["trt_engine_cache_path"] == str(tmp_path)
    assert opts["trt_timing_cache_enable"] and opts["trt_timing_cache_path"] == str(tmp_path)
    fixed = trt_options(BackendOptions(format="onnx", precision="fp32"), tmp_path, {})
    assert fixed["trt_fp16_enable"] is False and not any(k.startswith("trt_profile") for k in fixed)


def test_gpu_settings_reach_the_provider_options(tmp_path):
    """``gpu_device`` and ``cudnn_conv_algo_search`` (TOML/env) arrive in the options ONNX Runtime is handed."""
    config = load_config({"precision": "fp32"}, {"STYLECAST_GPU_DEVICE": "1",
                                                  "STYLECAST_CUDNN_CONV_ALGO_SEARCH": "heuristic"})
    options = config.backend_options("onnx", threads=2, workers=1)
    assert CudaBackend().cuda_options(options) == {
        "device_id": 1, "cudnn_conv_algo_search": "HEURISTIC", "do_copy_in_default_stream": True}
    trt = trt_options(options, tmp_path, {})
    assert trt["device_id"] == 1 and trt["trt_fp16_enable"] is False
    for bad, says in (({"cudnn_conv_algo_search": "FASTEST"}, "EXHAUSTIVE, HEURISTIC, DEFAULT"),
                      ({"gpu_device": -1}, "gpu_device must be >= 0")):
        with pytest.raises(ConfigError, match=says):
            load_config(bad, {})



async def test_the_server_loads_its_backend_with_the_configured_gpu_settings(server_factory, monkeypatch):
    """The options a real server hands its backend's load are its config's (``backend_options``)."""
    import stylecast.server.loader as loader

    seen: list[BackendOptions] = []

    def spying(name: str):
        backend = create_backend(name)
        real = backend.load
        backend.load = lambda package, options: seen.append(options) or real(package, options)
        return backend

    monkeypatch.setattr(loader, "create_backend", spying)
    await server_factory(gpu_device=2, cudnn_conv_algo_search="DEFAULT", precision="fp32", workers=1, threads=1)
    assert [(o.device_id, o.cudnn_conv_algo_search, o.precision, o.workers, o.threads) for o in seen] == [
        (2, "DEFAULT", "fp32", 1, 1)]


# ------------------------------------------------------------------ engine cache

def test_cache_key_changes_with_model_precision_profile_and_runtime(builtin, tmp_path):
    p = content_profile([(512, 512)], 1)
    folder = lambda *a, **kw: EngineCache(tmp_path, "ort-trt", cache_key(*a, **kw)).folder  # noqa: E731
    base = folder(builtin, "onnx", "fp16", p, RUNTIME)
    assert base == folder(builtin, "onnx", "fp16", p, dict(reversed(RUNTIME.items())))   # deterministic
    assert base.parent == tmp_path / "ort-trt" / f"{builtin.name}-{builtin.version}"
    files = builtin.artifact("onnx").files
    changed = dataclasses.replace(files[0], sha256="0" * 64)
    other_model = dataclasses.replace(builtin, artifacts=builtin.artifacts | {
        "onnx": dataclasses.replace(builtin.artifact("onnx"), files=(changed, *files[1:]))})
    assert artifact_digest(other_model, "onnx") != artifact_digest(builtin, "onnx")
    others = [folder(other_model, "onnx", "fp16", p, RUNTIME),
              folder(builtin, "savedmodel", "fp16", p, RUNTIME),
              folder(builtin, "onnx", "fp32", p, RUNTIME),
              folder(builtin, "onnx", "fp16", content_profile([(512, 512)], 4), RUNTIME),
              folder(builtin, "onnx", "fp16", content_profile([(1080, 1920)], 1), RUNTIME),
              folder(builtin, "onnx", "fp16", p, RUNTIME | {"tensorrt": "10.14.1"}),
              folder(builtin, "onnx", "fp16", p, RUNTIME | {"gpu": "NVIDIA T4 sm_75"})]
    assert len({base, *others}) == 1 + len(others)
    with pytest.raises(BackendError, match="precision 'int8'"):
        cache_key(builtin, "onnx", "int8", p, RUNTIME)


def test_engine_cache_entries_appear_whole_and_are_reused(builtin, tmp_path):
    key = cache_key(builtin, "savedmodel", "fp16", content_profile([(512, 512)], 1), RUNTIME)
    cache = EngineCache(tmp_path, "tf-trt", key)
    assert not cache.ready()

    def broken(scratch: Path) -> None:
        (scratch / "half").write_text("x")
        raise RuntimeError("converter failed")

    with pytest.raises(RuntimeError, match="converter failed"):
        cache.publish(broken)
    assert not cache.folder.exists() and not list(cache.folder.parent.iterdir())   # nothing half-written left
    built = []
    cache.publish(lambda scratch: (built.append(1), (scratch / "stylize").mkdir()))
    assert cache.ready() and (cache.folder / "stylize").is_dir() and built == [1]
    again = EngineCache(tmp_path, "tf-trt", dict(key))
    assert again.folder == cache.folder and again.ready()                            # a restart finds it
    other = EngineCache(tmp_path, "tf-trt", key | {"precision": "fp32"})
    assert other.folder != cache.folder and not other.ready()
    # an entry whose key file disagrees (stale, or hand-edited) is rebuilt, not trusted
    (cache.folder / "key.json").write_text("{}")
    assert not EngineCache(tmp_path, "tf-trt", key).ready()
    cache.publish(lambda scratch: (scratch / "predict_style").mkdir())
    assert cache.ready() and (cache.folder / "predict_style").is_dir() and not (cache.folder / "stylize").exists()
    # a runtime that fills the folder itself (ORT) gets it with its key file
    own = EngineCache(tmp_path, "ort-trt", key)
    assert own.prepare() == own.folder and own.ready()


# ------------------------------------------------------------------ refusals on this machine

def test_tensorrt_versions_and_config_settings_read_right():
    from stylecast.server.config import ConfigError, ServerConfig

    assert nvidia._version(100300) == "10.3.0" and nvidia._version(8601) == "8.6.1"   # TRT 10 / TRT 8 encodings
    config = ServerConfig(warmup_sizes="288x512,1080x1920", process_max_side=640, precision="fp32")
    assert config.frame_sizes == ((288, 512), (1080, 1920), (640, 640))
    profile = content_profile(config.frame_sizes, config.max_batch)
    assert (profile.opt, profile.max) == ((1, 288, 512), (1, 1920, 1920))
    with pytest.raises(ConfigError, match="precision must be fp16 or fp32"):
        ServerConfig(precision="int8")


def test_nvidia_probes_say_what_is_missing():
    found = nvidia.cuda()
    if found.gpus:
        pytest.skip(f"this machine has {found.gpus[0].name}")
    assert "libcuda.so.1" in found.problem or "GPU" in found.problem
    with pytest.raises(LookupError, match=found.problem[:20]):
        nvidia.gpu(0)
    assert nvidia.memory_used(0) is None and nvidia.GpuMemoryGrowth(0).update() == 0
    version, why = nvidia.tensorrt_version()
    assert version or "libnvinfer.so.10" in why


@pytest.mark.parametrize("name", ["tensorrt", "cuda"])
def test_ort_gpu_backends_refuse_with_what_is_missing(builtin, name):
    if not PROBLEMS[name]:
        pytest.skip(f"{name} can run here")
    with pytest.raises(BackendUnavailable, match=f"the {name} backend cannot run here: ") as refused:
        create_backend(name).load(builtin, BackendOptions(format="onnx"))
    assert PROBLEMS[name] in str(refused.value)


def _why_not(backend: str) -> str:
    """Why ``backend`` cannot run here; TF-TRT is asked in a subprocess (this process keeps
    TensorFlow out), through the registry's own check."""
    if backend != "tf-trt":
        return PROBLEMS[backend]
    code = "from stylecast.backends.base import unavailable; print(unavailable('tf-trt'))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""


@pytest.mark.parametrize("backend", ["tensorrt", "cuda", "tf-trt"])
def test_serve_refuses_a_gpu_backend_it_cannot_run(tmp_path, backend):
    """``stylecast serve --backend X`` exits 2 naming what is missing, before serving anything."""
    why = _why_not(backend)
    if not why:
        pytest.skip(f"{backend} can run here")
    cmd = [sys.executable, "-m", "stylecast.client", "serve", "--backend", backend, "--port", "0",
           "--metrics-port", "0", "--host", "127.0.0.1", "--style-store", f"sqlite:///{tmp_path / 's.db'}",
           "--upload-dir", str(tmp_path / "up")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, STYLECAST_ENGINE_CACHE_DIR=str(tmp_path / "engines")))
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("stylecast serve: ") and f"{backend}:" in last, last
    if backend != "tf-trt":
        assert "onnxruntime-gpu" in last or "NVIDIA driver" in last or "libnvinfer" in last, last
    elif "built without TensorRT" in last:   # today's TensorFlow (>= 2.18): where to get one with it
        assert "TensorFlow <= 2.17" in last and "Dockerfile.gpu-tftrt" in last, last
    else:
        assert "TensorRT" in last or "GPU" in last or "'tensorflow'" in last, last


def test_the_device_check_dry_run_measures_through_the_same_code(tmp_path):
    """``python -m benchmarks.gpu --dry-run`` (what ``gpu_check.sh`` runs on a lent GPU, here on the
    onnx CPU backend at tiny sizes): every cell measured, every served plan answered, the report
    written, and each GPU backend either measured or named with why it is not."""
    if any(not _why_not(b) for b in ("tensorrt", "cuda", "tf-trt")):
        pytest.skip("a GPU backend can run here: the dry run would measure it for minutes")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu", "--out", str(tmp_path), "--dry-run",
                           "--budget-s", "300"], capture_output=True, text=True, timeout=600,
                          cwd=Path(__file__).parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "gpu_check.json").read_text())
    assert set(results["availability"]) == {"tensorrt", "cuda", "tf-trt"}
    assert all(results["availability"].values())  # each names what is missing here
    cells = results["backends"]["onnx"]["cells"]
    assert cells and all(c["fps"] > 0 for c in cells.values()), cells
    served = results["served"]["onnx"]
    assert served and all(r["fps"] > 0 and r["errors"] == 0 for r in served.values()), served
    assert "onnx (onnx)" in (tmp_path / "gpu_check.txt").read_text()


@pytest.mark.integration
async def test_loading_a_gpu_backend_it_cannot_run_keeps_the_model_serving(server):
    if not PROBLEMS["tensorrt"]:
        pytest.skip("tensorrt can run here")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=CHANNEL_OPTIONS) as channel:
        admin, stub = apb_grpc.ModelAdminStub(channel), pb_grpc.StyleTransferStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await admin.LoadModel(apb.LoadModelRequest(name="tiny", load_order=["tensorrt:onnx"]))
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "tensorrt" in refused.value.details() and "onnxruntime-gpu" in refused.value.details()
        style = await register(stub, picture(64, 64, seed=3))
        out = await stub.StylizeImage(pb.StylizeImageRequest(
            config=pb.StreamConfig(style_id=style.id), image=pb.Image(data=encoded(picture(40, 30, seed=4)))))
        assert (out.result.image.width, out.result.image.height) == (40, 30) and out.result.backend == "litert"


# ------------------------------------------------------------------ auto

def test_auto_takes_the_first_backend_that_runs_here_and_logs_why(builtin, caplog):
    from stylecast.backends.base import AUTO_ORDER, best_available, unavailable
    from stylecast.server.config import ServerConfig
    from stylecast.server.errors import FailedPrecondition
    from stylecast.server.packages import choose_backend

    if nvidia.cuda().gpus:
        pytest.skip("this machine has a GPU: auto takes a GPU backend")
    assert AUTO_ORDER[:3] == ("tensorrt", "cuda", "tf-trt")
    caplog.set_level("INFO", logger="stylecast.backends.base")
    assert choose_backend(ServerConfig(backend="auto"), builtin) == ("litert", "tflite-int8")
    message = caplog.records[-1].getMessage()
    assert message.startswith("backend auto: litert; not tensorrt: ")
    for name in ("tensorrt", "cuda", "tf-trt"):
        assert f"not {name}: {unavailable(name)}" in message and unavailable(name)
    # the package decides too: no TFLite artifact, or a format asked for
    assert best_available(("savedmodel",)) == "savedmodel"
    assert "not litert: the model has no tflite-int8 / tflite-fp16 / tflite-fp32 artifact" in caplog.records[-1].getMessage()
    assert choose_backend(ServerConfig(backend="auto", format="onnx"), builtin) == ("onnx", "onnx")
    with pytest.raises(FailedPrecondition, match="no backend can run here: tensorrt: .*; onnx: the model has no onnx"):
        choose_backend(ServerConfig(backend="auto", format="tflite-int4"), builtin)


# ------------------------------------------------------------------ on a GPU

# One profile for every GPU test (256² typical, up to 512², batch ≤ 2: what a server with
# warmup_sizes "256x256", process_max_side 512 and max_batch 2 builds), so TensorRT builds its
# engines once per run, in one folder, and the later tests load them.
GPU_SIZES, GPU_BATCH = ((256, 256), (512, 512)), 2


@pytest.fixture(scope="module")
def engine_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("engines")


def _gpu_options(engine_dir: Path) -> BackendOptions:
    return BackendOptions(format="onnx", max_batch=GPU_BATCH, frame_sizes=GPU_SIZES, engine_cache_dir=str(engine_dir))


def _needs(name: str) -> None:
    if PROBLEMS[name]:
        pytest.skip(f"{name}: {PROBLEMS[name]}")


def _cpu_reference(builtin, content: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    cpu = create_backend("onnx")
    cpu.load(builtin, BackendOptions(format="onnx", threads=os.cpu_count() or 1))
    try:
        return cpu.stylize(content, vectors)
    finally:
        cpu.close()


def _content(n: int, h: int, w: int) -> np.ndarray:
    return to_float(np.stack([picture(w, h, seed=i) for i in range(n)]))


@pytest.mark.gpu
@pytest.mark.parametrize("name,atol,mean_tol", [("cuda", 2e-3, 2e-4), ("tensorrt", 0.1, 5e-3)])  # TensorRT: fp16
def test_ort_gpu_backends_agree_with_the_cpu(builtin, engine_dir, name, atol, mean_tol):
    _needs(name)
    backend = create_backend(name)
    backend.load(builtin, _gpu_options(engine_dir))
    backend.warmup([(288, 512)])
    style = to_float(np.stack([picture(256, 256, seed=9), picture(256, 256, seed=10)]))
    vectors = backend.predict_style(style)
    cpu = create_backend("onnx")
    cpu.load(builtin, BackendOptions(format="onnx"))
    np.testing.assert_allclose(vectors, cpu.predict_style(style), atol=atol * max(1.0, float(np.abs(vectors).max())))
    for n, h, w in ((2, 288, 512), (1, 37, 53), (3, 64, 96)):   # batch 3 > max_batch 2: run in slices
        content = _content(n, h, w)
        out, ref = backend.stylize(content, vectors[np.arange(n) % 2]), cpu.stylize(content, vectors[np.arange(n) % 2])
        assert out.shape == content.shape
        np.testing.assert_allclose(out, ref, atol=atol)
        assert np.abs(out - ref).mean() <= mean_tol
    mem = backend.memory_bytes()
    assert mem["device"] > 0, mem
    backend.close()


@pytest.mark.gpu
def test_tensorrt_engines_are_cached_and_new_sizes_need_no_rebuild(builtin, engine_dir):
    _needs("tensorrt")
    options = _gpu_options(engine_dir)
    first = create_backend("tensorrt")
    first.load(builtin, options)
    first.warmup([(256, 256)])   # builds the engines, or loads those an earlier test built
    engines = {p: p.stat().st_mtime_ns for p in first.cache.folder.iterdir() if p.suffix == ".engine"}
    assert engines, list(first.cache.folder.iterdir())
    vector = first.predict_style(np.full((1, 256, 256, 3), 0.5, np.float32))
    for h, w in ((512, 288), (100, 60), (512, 512)):             # inside the profile: same engines
        first.stylize(_content(1, h, w), vector)
    big = _content(1, 1080, 1920)                                # outside: scaled to fit, same engines
    out = first.stylize(big, vector)
    assert out.shape == big.shape
    assert {p: p.stat().st_mtime_ns for p in first.cache.folder.iterdir() if p.suffix == ".engine"} == engines
    reference = first.stylize(_content(1, 256, 256), vector)
    first.close()
    again = create_backend("tensorrt")                           # a restart: loads the cached engines
    again.load(builtin, options)
    assert again.cache.folder == first.cache.folder
    np.testing.assert_array_equal(again.stylize(_content(1, 256, 256), vector), reference)
    assert {p: p.stat().st_mtime_ns for p in again.cache.folder.iterdir() if p.suffix == ".engine"} == engines
    again.close()


@pytest.mark.gpu
def test_cuda_io_binding_matches_a_plain_run(builtin):
    _needs("cuda")
    backend = create_backend("cuda")
    backend.load(builtin, BackendOptions(format="onnx"))
    content, style = _content(1, 64, 96), np.random.default_rng(0).normal(size=(1, builtin.style_dim)).astype(np.float32)
    ep, session = backend._eps["stylize"], backend._sessions["stylize"]
    plain = session.run([ep.output], {ep.inputs["content"]: content, ep.inputs["style"]: style})[0]
    np.testing.assert_array_equal(backend._call("stylize", {"content": content, "style": style}), plain)
    backend.close()


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["tensorrt", "cuda"])
async def test_a_gpu_backend_serves_a_stream(tmp_path, engine_dir, name):
    """The built-in model served on the GPU (no tiny package: exporting it needs TensorFlow),
    configured so that it needs the engines the tests above built."""
    _needs(name)
    running = await start(make_config(BUILTIN_DIR, tmp_path, backend=name, format="onnx", workers=1, threads=2,
                                      max_batch=GPU_BATCH, max_wait_ms=2.0, warmup_sizes="256x256",
                                      process_max_side=512, engine_cache_dir=str(engine_dir)))
    try:
        assert running.engine.model.backend.name == name
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}", options=CHANNEL_OPTIONS) as channel:
            stub = pb_grpc.StyleTransferStub(channel)
            style = await register(stub, picture(64, 64, seed=3))

            async def requests():
                yield pb.StylizeRequest(config=pb.StreamConfig(style_id=style.id))
                for i in range(6):
                    image = pb.Image(data=encoded(picture(160, 120, seed=i)))
                    yield pb.StylizeRequest(frame=pb.Frame(id=i, image=image))

            answers = [r async for r in stub.Stylize(requests())]
    finally:
        await running.stop(1.0)
    assert [a.frame.id for a in answers] == list(range(6))
    assert all(a.WhichOneof("msg") == "frame" and a.frame.backend == name for a in answers), answers
    if name == "tensorrt":
        assert running.engine.model.backend.cache.folder.parent.parent == engine_dir / "ort-trt"


# ------------------------------------------------------------------ the TF-TRT image

def test_tftrt_dockerfile_pins_a_tensorflow_with_tensorrt_and_serves_tf_trt():
    """No Docker engine here: the file is read as a Docker build would, instruction by instruction."""
    import re

    from stylecast.server.config import ServerConfig

    from test_deploy_files import serve_flags

    text = (Path(__file__).resolve().parents[1] / "deploy/docker/Dockerfile.gpu-tftrt").read_text()
    body = re.sub(r"\\\n", " ", "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#")))
    lines = [ln.strip() for ln in body.splitlines() if ln.strip()]
    args = dict(re.findall(r'^ARG (\w+)="?([^"\n]*)"?$', "\n".join(lines), re.MULTILINE))
    assert args["PYTHON_IMAGE"] == "python:3.11-slim"                      # the base image is a build arg
    assert [ln for ln in lines if ln.startswith("FROM")] == ["FROM ${PYTHON_IMAGE} AS wheel", "FROM ${PYTHON_IMAGE}"]
    tf_version = re.fullmatch(r"tensorflow\[and-cuda\]==(\d+)\.(\d+)\.(\d+)", args["TENSORFLOW"])
    assert tf_version and (int(tf_version[1]), int(tf_version[2])) <= (2, 17)   # TF-TRT's last line
    assert re.fullmatch(r"tensorrt-libs==8\.\d+\.\d+", args["TENSORRT_LIBS"])    # what TF 2.17 links against
    run = " ".join(ln for ln in lines if ln.startswith("RUN"))
    assert run.index('"$TENSORFLOW"') < run.index("stylecast-*.whl")    # stylecast's protobuf 7 after TF's pins
    assert "get_linked_tensorrt_version" in run and "is_tensorrt_enabled" in run and "ldconfig" in run
    user = [ln for ln in lines if ln.startswith("USER")][-1].split()[1]
    assert user.split(":")[0].isdigit() and int(user.split(":")[0]) != 0
    exposed = {int(p) for ln in lines if ln.startswith("EXPOSE") for p in ln.split()[1:]}
    assert exposed == {ServerConfig.port, ServerConfig.metrics_port}
    flags, _ = serve_flags(json.loads([ln for ln in lines if ln.startswith("CMD")][-1][3:]))
    assert flags["backend"] == "tf-trt"
