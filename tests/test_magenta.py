"""import-magenta and the LiteRT backend against the Magenta teacher files run directly.

Needs the teacher in ``<repo>/../shared/assets`` (never part of the project);
every test here skips with that reason when it is absent.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter
from PIL import Image

from stylecast.backends.base import BackendError, BackendOptions, create_backend
from stylecast.backends.package import PackageError, load_package
from stylecast.model.magenta import import_magenta, weight_precision
from stylecast.model.preprocess import content_image, style_image
from stylecast.model.xnnpack import xnnpack_partitions

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"
MAGENTA = ASSETS / "models" / "magenta"
PREDICT = MAGENTA / "style_predict_quantized_256.tflite"
TRANSFER = MAGENTA / "style_transfer_quantized_384.tflite"
TRANSFER_F16 = MAGENTA / "style_transfer_f16_384.tflite"

pytestmark = pytest.mark.skipif(not (PREDICT.is_file() and TRANSFER.is_file()),
                                reason=f"Magenta teacher files not found under {MAGENTA}")


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    return import_magenta(PREDICT, TRANSFER, tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def backend(package):
    b = create_backend("litert")
    b.load(package, BackendOptions(format="tflite-int8", threads=2, workers=1))
    yield b
    b.close()


@pytest.fixture(scope="module")
def styles() -> np.ndarray:
    paths = sorted((ASSETS / "styles").glob("*.jpg"))[:3]
    return np.stack([style_image(Image.open(p)) for p in paths])


def photo(i: int, size: tuple[int, int]) -> np.ndarray:
    """Real photo ``i`` of content/val, bilinear-resized to ``size`` = (width, height): 1×H×W×3."""
    path = sorted((ASSETS / "content" / "val").glob("*.jpg"))[i]
    return content_image(Image.open(path), size)[None]


def raw(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """Run a signature-less teacher file directly, binding its tensors by name."""
    it = Interpreter(model_path=str(path), num_threads=2)
    it.allocate_tensors()
    index = {d["name"]: d["index"] for d in it.get_input_details()}
    for name, value in feeds.items():
        it.set_tensor(index[name], value)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])


def raw_stylize(content: np.ndarray, vector: np.ndarray, path: Path = TRANSFER) -> np.ndarray:
    return raw(path, {"content_image": content, "mobilenet_conv/Conv/BiasAdd": vector.reshape(1, 1, 1, 100)})


def scale(x: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize of one H×W×3 float image, channel by channel (PIL float mode)."""
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(x[..., c])).resize((width, height),
                                                                                        Image.BILINEAR))
                     for c in range(3)], axis=-1)


def test_import_writes_a_verified_two_file_package(package):
    assert set(package.artifacts) == {"tflite-int8"}
    art = package.artifact("tflite-int8")
    assert [f.path for f in art.files] == ["tflite/style_predict.tflite", "tflite/style_transfer.tflite"]
    assert art.files[1].sha256 == hashlib.sha256(TRANSFER.read_bytes()).hexdigest()
    assert art.endpoints["stylize"]["fixed_hw"] == [384, 384]
    assert art.endpoints["stylize"]["inputs"] == {"content": "content_image", "style": "mobilenet_conv/Conv/BiasAdd"}
    assert art.endpoints["predict_style"]["inputs"] == {"image": "style_image"}
    assert package.style_dim == 100 and (package.name, package.version) == ("magenta", "1")
    package.verify()
    again = load_package(package.path)
    assert again.artifacts["tflite-int8"].to_json() == art.to_json()
    assert json.loads((package.path / "manifest.json").read_text())["source"]["kind"] == "magenta"


def test_format_follows_the_transformer_weights(tmp_path):
    assert weight_precision(TRANSFER) == "int8" and weight_precision(PREDICT) == "int8"
    if not TRANSFER_F16.is_file():
        pytest.skip(f"{TRANSFER_F16.name} not in the assets")
    pkg = import_magenta(PREDICT, TRANSFER_F16, tmp_path, name="m16")
    assert set(pkg.artifacts) == {"tflite-fp16"}
    b = create_backend("litert")
    b.load(pkg, BackendOptions(format="tflite-fp16", threads=2))
    out = b.stylize(photo(0, (200, 120)), np.zeros((1, 100), np.float32))
    assert out.shape == (1, 120, 200, 3) and 0.0 <= out.min() and out.max() <= 1.0


def test_teacher_runs_either_transformer_file(styles):
    """``Teacher(transfer=)`` with the fp16 file (the evaluation's second reference) runs that file
    itself; it is the int8 file's network: near its output, not equal to it."""
    if not TRANSFER_F16.is_file():
        pytest.skip(f"{TRANSFER_F16.name} not in the assets")
    from stylecast.model.quality import psnr
    from stylecast.model.teacher import Teacher

    t8, t16 = Teacher(MAGENTA), Teacher(MAGENTA, transfer=TRANSFER_F16.name)
    vector = t8.predict_style(styles[:1])
    np.testing.assert_allclose(t16.predict_style(styles[:1]), vector)
    content = photo(1, (384, 384))
    a, b = t8.stylize(content, vector)[0], t16.stylize(content, vector)[0]
    np.testing.assert_allclose(b, raw_stylize(content, vector, TRANSFER_F16)[0], atol=1e-5)
    np.testing.assert_allclose(a, raw_stylize(content, vector)[0], atol=1e-5)
    assert 22.0 < psnr(a, b) < 40.0  # int8 quantization error: ~28 dB on content/val (MODEL_CARD)
    # close() deletes the imported package's temporary folder
    folder = t8.package.path
    assert folder.is_dir()
    t8.close()
    t16.close()
    assert not folder.exists()


def test_import_rejects_swapped_files_and_existing_package(package, tmp_path):
    with pytest.raises(PackageError, match="right order"):
        import_magenta(TRANSFER, PREDICT, tmp_path)
    with pytest.raises(PackageError, match="exists"):
        import_magenta(PREDICT, TRANSFER, package.path.parents[1])
    with pytest.raises(PackageError, match="no such file"):
        import_magenta(tmp_path / "nope.tflite", TRANSFER, tmp_path)


def test_litert_matches_the_teacher_run_directly(backend, styles):
    vectors = backend.predict_style(styles)
    assert vectors.shape == (len(styles), 100)
    for i, s in enumerate(styles):
        np.testing.assert_allclose(vectors[i], raw(PREDICT, {"style_image": s[None]}).reshape(100), atol=1e-5)
    content = photo(1, (384, 384))
    np.testing.assert_allclose(backend.stylize(content, vectors[:1]), raw_stylize(content, vectors[0]), atol=1e-5)
    # and the styles really differ: a different vector moves the picture a lot
    assert np.abs(raw_stylize(content, vectors[0]) - raw_stylize(content, vectors[1])).mean() > 0.05


def test_odd_size_is_scaled_to_384_and_back(backend, styles):
    vector = backend.predict_style(styles[:1])
    content = photo(2, (333, 250))
    out = backend.stylize(content, vector)
    assert out.shape == (1, 250, 333, 3)
    expected = scale(raw_stylize(scale(content[0], 384, 384)[None], vector)[0], 333, 250)
    np.testing.assert_allclose(out[0], expected, atol=1e-5)


def test_batch_of_three_equals_three_single_calls(backend, styles):
    vectors = backend.predict_style(styles)
    content = np.concatenate([photo(i, (333, 250)) for i in range(3)])
    batch = backend.stylize(content, vectors)
    singles = np.concatenate([backend.stylize(content[i:i + 1], vectors[i:i + 1]) for i in range(3)])
    np.testing.assert_array_equal(batch, singles)


def test_missing_format_and_wrong_backend_are_clear(package):
    with pytest.raises(PackageError, match=r"has no 'tflite-fp32' artifact \(has: tflite-int8\)"):
        create_backend("litert").load(package, BackendOptions(format="tflite-fp32"))
    with pytest.raises(BackendError, match="serves the 'onnx' format"):
        create_backend("onnx").load(package, BackendOptions(format="tflite-int8"))


def test_memory_estimate_covers_the_allocated_interpreters(package):
    b = create_backend("litert")
    b.load(package, BackendOptions(format="tflite-int8", threads=1, workers=1))
    b.warmup([(384, 384)])
    # the full-integer 384² transformer alone allocates well over 100 MB of arenas
    assert b.memory_bytes()["host"] > 100 << 20 and b.memory_bytes()["device"] == 0
    b.close()


def test_xnnpack_partition_check_on_the_teacher_files():
    partitions = xnnpack_partitions(PREDICT)
    assert list(partitions) == ["main"]  # a signature-less file
    predictor = partitions["main"]
    assert predictor.single, predictor
    if not TRANSFER_F16.is_file():
        pytest.skip(f"{TRANSFER_F16.name} not in the assets")
    transformer = xnnpack_partitions(TRANSFER_F16)["main"]
    # reflect padding falls off XNNPACK and splits the graph: the check must see it
    assert not transformer.single and transformer.partitions > 1 and "MIRROR_PAD" in transformer.outside


def resize_sizes_patched(src: Path, dst: Path, h: int, w: int) -> None:
    """The original transformer with its three baked resize sizes rewritten for an h×w input:
    an independent reference for what the resizable rewrite must compute at that size."""
    from ai_edge_litert.tools import flatbuffer_utils as fu

    model = fu.read_model(src)
    sub = model.subgraphs[0]
    resizes = [op for op in sub.operators if fu.opcode_to_name(model, op.opcodeIndex) == "RESIZE_NEAREST_NEIGHBOR"]
    assert len(resizes) == 3
    for op, size in zip(resizes, [(h // 2, w // 2), (h, w), (h, w)]):
        model.buffers[sub.tensors[op.inputs[1]].buffer].data = np.frombuffer(
            np.asarray(size, np.int32).tobytes(), np.uint8)
    dst.write_bytes(bytes(fu.convert_object_to_bytearray(model)))


def run_at(path: Path, content: np.ndarray, vector: np.ndarray) -> np.ndarray:
    it = Interpreter(model_path=str(path), num_threads=2)
    c, s = it.get_input_details()
    it.resize_tensor_input(c["index"], content.shape)
    it.allocate_tensors()
    it.set_tensor(c["index"], content)
    it.set_tensor(s["index"], vector.reshape(1, 1, 1, 100))
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])


def test_resizable_import_runs_the_teacher_at_any_size(tmp_path, styles):
    pkg = import_magenta(PREDICT, TRANSFER, tmp_path, resizable=True)
    art = pkg.artifact("tflite-int8")
    assert art.endpoints["stylize"]["fixed_hw"] is None
    b = create_backend("litert")
    b.load(pkg, BackendOptions(format="tflite-int8", threads=2))
    vector = b.predict_style(styles[:1])
    # at the baked size it is the teacher, exactly
    square = photo(0, (384, 384))
    np.testing.assert_allclose(b.stylize(square, vector), raw_stylize(square, vector), atol=1e-6)
    # at another size it equals the original graph with its resize sizes set for that size
    wide = photo(1, (576, 320))
    resize_sizes_patched(TRANSFER, tmp_path / "patched.tflite", 320, 576)
    np.testing.assert_allclose(b.stylize(wide, vector), run_at(tmp_path / "patched.tflite", wide, vector), atol=1e-6)
    # which scaling to 384² and back does not give: the picture is really computed at 320×576
    assert np.abs(b.stylize(wide, vector) - backend_fixed_stylize(wide, vector)).mean() > 0.02
    # odd sizes are padded to 16 and cropped
    assert b.stylize(photo(2, (333, 250)), vector).shape == (1, 250, 333, 3)


def backend_fixed_stylize(content: np.ndarray, vector: np.ndarray) -> np.ndarray:
    h, w = content.shape[1:3]
    return scale(raw_stylize(scale(content[0], 384, 384)[None], vector)[0], w, h)[None]


def test_resizable_refuses_graphs_with_other_size_dependent_ops(tmp_path):
    from stylecast.model.magenta import make_resizable

    legacy = MAGENTA / "legacy_2019" / "style_transfer_quantized_dynamic.tflite"
    if not legacy.is_file():
        pytest.skip(f"{legacy} not in the assets")
    # the 2019 file computes its resize sizes with SHAPE/STRIDED_SLICE/PACK: not rewritten blindly
    with pytest.raises(PackageError, match=r"cannot lift its fixed size: ops \['PACK', 'SHAPE', 'STRIDED_SLICE'\]"):
        make_resizable(legacy, tmp_path / "out.tflite")
    assert not (tmp_path / "out.tflite").exists()


@pytest.mark.skipif(not TRANSFER_F16.is_file(), reason=f"{TRANSFER_F16} not found")
def test_keras_port_of_the_teacher_matches_litert_at_every_block_boundary(tmp_path):
    """The Keras teacher (from the f16 file's fp16 constants, saved and reloaded as the recipe's
    pack holds it) against LiteRT running the same file with every intermediate kept: the
    output within 1e-4 on [0,1] and each tapped activation within 1e-4 of its own largest magnitude."""
    from stylecast.model.teacher_port import TeacherGraph, build_teacher, extract_graph

    extract_graph(TRANSFER_F16).save(tmp_path / "teacher.npz")
    graph = TeacherGraph.load(tmp_path / "teacher.npz")
    keras_teacher = build_teacher(graph, features=True)
    content = content_image(Image.open(sorted((ASSETS / "content" / "val").iterdir())[0]), (384, 384))[None]
    style = np.random.default_rng(0).normal(0, 0.5, (1, 100)).astype(np.float32)
    it = Interpreter(model_path=str(TRANSFER_F16), experimental_preserve_all_tensors=True, num_threads=2)
    it.allocate_tensors()
    inputs = {d["name"]: d["index"] for d in it.get_input_details()}
    it.set_tensor(inputs.pop("content_image"), content)
    it.set_tensor(inputs.popitem()[1], style.reshape(1, 1, 1, 100))
    it.invoke()
    got = keras_teacher([content, style])
    want = it.get_tensor(it.get_output_details()[0]["index"])
    assert np.abs(np.asarray(got["stylized"]) - want).max() < 1e-4
    for tap, index in graph.tap_ids().items():
        ref = it.get_tensor(index)
        assert np.abs(np.asarray(got[tap]) - ref).max() < 1e-4 * max(1.0, float(np.abs(ref).max())), tap
    # any size that is a multiple of 4, any batch: rows equal single calls
    pair = np.concatenate([content[:, :200, :300], content[:, 100:300, :300]])
    styles = np.concatenate([style, -style])
    batch = np.asarray(build_teacher(graph)([pair, styles]))
    assert batch.shape == (2, 200, 300, 3)
    np.testing.assert_allclose(batch[1:], np.asarray(build_teacher(graph)([pair[1:], styles[1:]])), atol=1e-5)
