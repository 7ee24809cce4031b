"""The inference backends through their real runtimes, on the tiny exported test package.

Tolerances (outputs in [0, 1], against the SavedModel as reference), as
(max, mean) absolute difference: TFLite fp32 and ONNX (1e-4, 1e-5); TFLite fp16
(5e-3, 1e-3); TFLite int8, weights-only, (0.15, 0.01).  Style vectors: the max
bound, scaled by the vectors' magnitude.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from stylecast.backends.base import (
    BackendError, BackendOptions, BackendUnavailable, backend_names, best_available, create_backend,
    pad_to_multiple)
from stylecast.backends.package import PackageError, load_package

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = {"tflite-fp32": (1e-4, 1e-5), "tflite-fp16": (5e-3, 1e-3), "tflite-int8": (0.15, 0.01),
             "onnx": (1e-4, 1e-5)}


def images(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth, structured, deterministic N×H×W×3 float32 images in [0, 1]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for _ in range(n):
        f, p = rng.uniform(0.02, 0.2, 3), rng.uniform(0, 2 * np.pi, 3)
        out.append(np.stack([0.5 + 0.5 * np.sin(f[c] * x + p[c]) * np.cos(f[(c + 1) % 3] * y)
                             for c in range(3)], axis=-1))
    return np.asarray(out, dtype=np.float32)


@pytest.fixture(scope="module")
def tiny(tiny_models_dir: Path):
    return load_package(tiny_models_dir / "tiny" / "1")


def loaded(package, name: str, **options):
    backend = create_backend(name)
    backend.load(package, BackendOptions(**options))
    return backend


@pytest.fixture(scope="module")
def reference(tiny):
    """SavedModel outputs (style vectors of two style images; an odd-sized batch stylized with
    two distinct vectors — the random predictor's own are nearly alike): what every format must match."""
    sm = loaded(tiny, "savedmodel", format="savedmodel", threads=2)
    styles = images(2, 256, 256, seed=1)
    content = images(2, 50, 70, seed=2)
    vectors = np.random.default_rng(3).normal(size=(2, 100)).astype(np.float32)
    refs = sm.predict_style(styles), sm.stylize(content, vectors)
    sm.close()
    return styles, content, vectors, refs


@pytest.mark.parametrize("name,fmt", [("litert", "tflite-fp32"), ("litert", "tflite-fp16"),
                                      ("litert", "tflite-int8"), ("onnx", "onnx")])
def test_formats_agree_with_savedmodel(tiny, reference, name, fmt):
    styles, content, vectors, (ref_predicted, ref_out) = reference
    backend = loaded(tiny, name, format=fmt, threads=2)
    max_tol, mean_tol = TOLERANCE[fmt]
    predicted = backend.predict_style(styles)
    np.testing.assert_allclose(predicted, ref_predicted, atol=max_tol * max(1.0, float(np.abs(ref_predicted).max())))
    out = backend.stylize(content, vectors)
    assert out.shape == content.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, ref_out, atol=max_tol)
    assert np.abs(out - ref_out).mean() <= mean_tol
    # the other style gives a clearly different picture: the agreement above is not vacuous
    assert np.abs(ref_out[0] - backend.stylize(content[:1], vectors[1:])[0]).mean() > 0.05
    backend.close()


def test_savedmodel_xla_agrees(tiny, reference):
    styles, content, vectors, (ref_predicted, ref_out) = reference
    backend = loaded(tiny, "savedmodel", format="savedmodel", threads=2, xla=True)
    np.testing.assert_allclose(backend.stylize(content, vectors), ref_out, atol=1e-4)
    np.testing.assert_allclose(backend.predict_style(styles), ref_predicted, atol=1e-4)


@pytest.mark.parametrize("name,fmt", [("litert", "tflite-fp32"), ("onnx", "onnx"), ("savedmodel", "savedmodel")])
def test_odd_sizes_are_edge_padded_to_16_and_cropped(tiny, name, fmt):
    backend = loaded(tiny, name, format=fmt, threads=2)
    content, style = images(1, 37, 53, seed=3), np.random.default_rng(4).normal(size=(1, 100)).astype(np.float32)
    out = backend.stylize(content, style)
    assert out.shape == (1, 37, 53, 3)
    padded, _, _ = pad_to_multiple(content)
    assert padded.shape == (1, 48, 64, 3)
    np.testing.assert_allclose(out, backend.stylize(padded, style)[:, :37, :53], atol=1e-6)


def test_litert_batch_equals_single_calls(tiny):
    backend = loaded(tiny, "litert", format="tflite-fp32", threads=1)
    content = images(3, 40, 72, seed=5)
    styles = np.random.default_rng(6).normal(size=(3, 100)).astype(np.float32)
    batch = backend.stylize(content, styles)
    singles = np.concatenate([backend.stylize(content[i:i + 1], styles[i:i + 1]) for i in range(3)])
    np.testing.assert_allclose(batch, singles, atol=1e-5)
    # N×1×1×D style vectors (Magenta's layout) are accepted as N×D
    np.testing.assert_allclose(backend.stylize(content, styles.reshape(3, 1, 1, 100)), batch, atol=0)


def test_litert_drops_idle_interpreters(tiny):
    """An interpreter unused for idle_s is dropped at the worker's next call; a shape in use stays,
    and a dropped shape runs again (re-allocated) with the same result."""
    backend = loaded(tiny, "litert", format="tflite-fp32", threads=1, workers=1, idle_s=0.2)
    style = np.random.default_rng(3).normal(size=(1, 100)).astype(np.float32)
    odd, usual = images(1, 48, 80, seed=1), images(1, 32, 32, seed=2)
    first = backend.stylize(odd, style)
    backend.stylize(usual, style)
    cache = backend._workers[0]._cache["stylize"]
    assert len(cache) == 2
    in_use = next(program for k, (program, _) in cache.items() if k[0][1:3] == (32, 32))
    time.sleep(0.3)
    backend.stylize(usual, style)
    assert [k[0][1:3] for k in cache] == [(32, 32)]  # the odd shape went, the one in use stayed
    assert next(iter(cache.values()))[0] is in_use   # kept, not rebuilt
    np.testing.assert_array_equal(backend.stylize(odd, style), first)


def test_litert_workers_and_shape_lru_under_concurrency(tiny):
    """Two workers, an LRU of two shapes, four shapes from eight threads: every result is
    what a lone single-worker backend computes for that input."""
    shapes = [(32, 32), (48, 80), (64, 48), (33, 47)]
    cases = [(images(1, h, w, seed=10 + i), np.random.default_rng(i).normal(size=(1, 100)).astype(np.float32))
             for i, (h, w) in enumerate(shapes * 3)]
    lone = loaded(tiny, "litert", format="tflite-fp32", threads=1, workers=1, shape_cache=4)
    expected = [lone.stylize(c, s) for c, s in cases]
    shared = loaded(tiny, "litert", format="tflite-fp32", threads=1, workers=2, shape_cache=2)
    shared.warmup(shapes[:2])
    start = threading.Barrier(8)

    def run(i: int) -> np.ndarray:
        if i < 8:
            start.wait()
        return shared.stylize(*cases[i])

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(run, range(len(cases))))
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)


def test_bad_inputs_raise_backend_error(tiny):
    backend = loaded(tiny, "litert", format="tflite-fp32", threads=1)
    with pytest.raises(BackendError, match="N×H×W×3"):
        backend.stylize(np.zeros((1, 32, 32, 4), np.float32), np.zeros((1, 100), np.float32))
    with pytest.raises(BackendError, match="styles must be 2×100"):
        backend.stylize(np.zeros((2, 32, 32, 3), np.float32), np.zeros((1, 100), np.float32))
    with pytest.raises(BackendError, match="256×256"):
        backend.predict_style(np.zeros((1, 128, 128, 3), np.float32))
    backend.close()
    with pytest.raises(BackendError, match="no model loaded"):
        backend.stylize(np.zeros((1, 32, 32, 3), np.float32), np.zeros((1, 100), np.float32))


@pytest.mark.parametrize("name,fmt,corrupt", [("litert", "tflite-fp32", "tflite/fp32/stylize.tflite"),
                                              ("onnx", "onnx", "onnx/stylize.onnx")])
def test_corrupt_chunk_is_rejected_before_loading(tiny, tmp_path, name, fmt, corrupt):
    pkg_dir = shutil.copytree(tiny.path, tmp_path / "tiny" / "1")
    target = pkg_dir / corrupt
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    backend = create_backend(name)
    with pytest.raises(PackageError, match=rf"{corrupt}: chunk \d+ sha256 mismatch"):
        backend.load(load_package(pkg_dir), BackendOptions(format=fmt))
    with pytest.raises(BackendError, match="no model loaded"):
        backend.predict_style(images(1, 256, 256))


def test_unknown_format_and_backend_give_clear_errors(tiny):
    with pytest.raises(BackendError, match="serves tflite-fp32, tflite-fp16, tflite-int8, not 'tflite-int4'"):
        create_backend("litert").load(tiny, BackendOptions(format="tflite-int4"))
    with pytest.raises(BackendError, match="litert backend serves tflite-fp32, tflite-fp16, tflite-int8, not 'onnx'"):
        create_backend("litert").load(tiny, BackendOptions(format="onnx"))
    with pytest.raises(BackendError, match="serves the 'onnx' format"):
        create_backend("onnx").load(tiny, BackendOptions(format="tflite-fp32"))
    with pytest.raises(BackendError, match="unknown backend 'tflite'; choose one of litert"):
        create_backend("tflite")


def test_litert_serving_never_imports_tensorflow(tiny):
    code = (
        "import json, sys, numpy as np\n"
        "from stylecast.backends.base import BackendOptions, create_backend\n"
        "from stylecast.backends.package import load_package\n"
        "b = create_backend('litert')\n"
        "b.load(load_package(sys.argv[1]), BackendOptions(format='tflite-int8', threads=1))\n"
        "b.warmup([(64, 64)])\n"
        "v = b.predict_style(np.full((1, 256, 256, 3), 0.5, np.float32))\n"
        "out = b.stylize(np.full((1, 60, 90, 3), 0.5, np.float32), v)\n"
        "print(json.dumps({'shape': out.shape, 'tf': sorted(m for m in sys.modules if m.split('.')[0] in "
        "('tensorflow', 'keras', 'tf2onnx'))}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tiny.path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"shape": [1, 60, 90, 3], "tf": []}


def test_savedmodel_sets_thread_pools_before_tensorflow_starts(tiny):
    code = (
        "import sys, numpy as np, tensorflow as tf\n"
        "from stylecast.backends.base import BackendOptions, create_backend\n"
        "from stylecast.backends.package import load_package\n"
        "b = create_backend('savedmodel')\n"
        "b.load(load_package(sys.argv[1]), BackendOptions(format='savedmodel', threads=1))\n"
        "b.stylize(np.full((1, 32, 32, 3), 0.5, np.float32), np.zeros((1, 100), np.float32))\n"
        "print(tf.config.threading.get_intra_op_parallelism_threads(),"
        " tf.config.threading.get_inter_op_parallelism_threads())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tiny.path)], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["1", "1"]


def test_best_available_is_a_creatable_backend():
    from stylecast.backends import nvidia

    name = best_available()
    assert name in backend_names()
    if not nvidia.cuda().gpus:
        assert name == "litert"  # no GPU: the edge path
    assert create_backend(name).name == name
