"""``stylecast model export-mobile``: the files an app needs, checked as far as Linux allows.

The export runs once, in a subprocess (TensorFlow and coremltools stay out of the test process),
on the tiny fixture package at 64²; the same subprocess reads the Core ML specs back with
coremltools.  Here: mobile.json against the files' real tensor details (LiteRT), the fixed-shape
TFLite files' outputs against the package's own through the LiteRT backend (stated tolerances),
one XNNPACK partition per file, and the Core ML specs (ML Program, names, shapes, float32 I/O).
Core ML predictions need an Apple platform and are not run.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from stylecast.backends.base import BackendOptions, create_backend
from stylecast.backends.package import load_package
from stylecast.model.xnnpack import xnnpack_partitions

SIZE = 64
# A mobile file's output vs the package's fp32 artifact on the same input, per precision: max |Δ| of
# style vectors relative to their largest magnitude, and of stylized pixels in [0,1] (as
# tests/test_model.py), except int8 pixels: mean |Δ| (the tiny fixture's random, scaled-up style
# projections saturate single pixels under int8 weights: max 0.5, mean 0.007; the built-in model's
# int8 file at 256² is within max 0.041 of fp32).
TOLERANCE = {"fp16": 3e-2, "int8": 6e-2}
INT8_PIXELS_MEAN = 2e-2
# max |Δ| vs the package's own artifact of the same precision (the same weights, only the shapes fixed;
# measured 0.0)
SAME_PRECISION = 1e-4
EXPORT = """
import json, sys
from pathlib import Path
from typer.testing import CliRunner
from stylecast.client.cli import app
package, out, size = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
result = CliRunner().invoke(app, ["model", "export-mobile", package, "-o", str(out), "--size", size])
print(result.output)
print("=== the export's stderr ends here", file=sys.stderr, flush=True)
if result.exit_code:
    sys.exit(f"export failed ({result.exit_code}): {result.output} {result.exception!r}")
import coremltools as ct
dtypes = {v: k for k, v in ct.proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.items()}
specs = {}
for p in sorted(out.glob("*.mlpackage")):
    spec = ct.utils.load_spec(str(p))
    feats = lambda fs: [{"name": f.name, "shape": list(f.type.multiArrayType.shape),
                         "dtype": dtypes[f.type.multiArrayType.dataType]} for f in fs]
    ops = [op.type for f in spec.mlProgram.functions.values() for b in f.block_specializations.values()
           for op in b.operations]
    specs[p.name] = {"type": spec.WhichOneof("Type"), "version": spec.specificationVersion,
                     "inputs": feats(spec.description.input), "outputs": feats(spec.description.output),
                     "ops": ops}
(out / "specs.json").write_text(json.dumps(specs))
"""


@pytest.fixture(scope="module")
def exported(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    if importlib.util.find_spec("coremltools") is None:
        pytest.skip("coremltools not installed (the mobile extra; make test installs it)")
    out = tmp_path_factory.mktemp("mobile")
    # an earlier export at another size, and a file of the user's: the export removes the earlier
    # export's files it does not write again (only those listed in its mobile.json)
    (out / "Stylize1024.mlpackage" / "Data").mkdir(parents=True)
    (out / "Stylize1024.mlpackage" / "Data" / "weight.bin").write_bytes(b"old")
    for name in ("stylize_1024_fp16.tflite", "predict_style_fp16.tflite", "notes.txt"):
        (out / name).write_bytes(b"old")
    (out / "mobile.json").write_text(json.dumps({"tflite": [{"file": f} for f in (
        "stylize_1024_fp16.tflite", "predict_style_fp16.tflite", "../outside.txt")],
        "coreml": [{"file": "Stylize1024.mlpackage"}]}))
    (out.parent / "outside.txt").write_bytes(b"not the export's")
    proc = subprocess.run([sys.executable, "-c", EXPORT, str(tiny_models_dir / "tiny" / "1"), str(out), str(SIZE)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, proc.stdout, proc.stderr.split("=== the export's stderr ends here")[0]


@pytest.fixture(scope="module")
def manifest(exported) -> dict:
    return json.loads((exported[0] / "mobile.json").read_text())


def test_the_files_and_their_sizes(exported, manifest) -> None:
    out, printed, stderr = exported
    # the converters' logs are held back (--verbose shows them): one line per file, nothing else
    assert stderr == "", stderr[-2000:]
    assert len(printed.strip().splitlines()) == len(manifest["tflite"]) + len(manifest["coreml"]) + 1, printed
    names = {"predict_style_fp16.tflite", "predict_style_int8.tflite", f"stylize_{SIZE}_fp16.tflite",
             f"stylize_{SIZE}_int8.tflite", "StylePredict.mlpackage", f"Stylize{SIZE}.mlpackage", "mobile.json"}
    assert {p.name for p in out.iterdir()} == names | {"notes.txt", "specs.json"}  # the earlier export's are gone
    assert (out.parent / "outside.txt").exists()  # only plain names in the folder are removed
    assert manifest["model"] == {"name": "tiny", "version": "1"} and manifest["sizes"] == [SIZE]
    for entry in manifest["tflite"]:
        path = out / entry["file"]
        assert entry["bytes"] == path.stat().st_size > 0
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert f"{path}\t{entry['bytes']}\t" in printed
    for entry in manifest["coreml"]:
        files = [f for f in (out / entry["file"]).rglob("*") if f.is_file()]
        assert entry["bytes"] == sum(f.stat().st_size for f in files) > 0
        assert any(f.name == "weight.bin" for f in files)  # the ML Program's weights
        lines = sorted(f"{f.relative_to(out / entry['file']).as_posix()}\t{hashlib.sha256(f.read_bytes()).hexdigest()}\n"
                       for f in files)  # the folder digest README describes
        assert entry["sha256"] == hashlib.sha256("".join(lines).encode()).hexdigest()
    int8 = {e["file"]: e["bytes"] for e in manifest["tflite"] if e["precision"] == "int8"}
    fp16 = {e["file"].replace("fp16", "int8"): e["bytes"] for e in manifest["tflite"] if e["precision"] == "fp16"}
    assert all(int8[f] < fp16[f] for f in int8)  # int8 weights are smaller


def test_mobile_json_matches_the_tflite_files(exported, manifest) -> None:
    out, _, _ = exported
    assert len(manifest["tflite"]) == 4
    for entry in manifest["tflite"]:
        it = Interpreter(model_path=str(out / entry["file"]))
        sig = entry["signature"]
        assert list(it.get_signature_list()) == [sig]
        runner = it.get_signature_runner(sig)
        for side, details in (("inputs", runner.get_input_details()), ("outputs", runner.get_output_details())):
            declared = {t["name"]: t for t in entry[side]}
            assert set(declared) == set(details)
            for name, d in details.items():
                assert declared[name]["tensor"] == d["name"]
                assert declared[name]["shape"] == list(d["shape"]) == list(d["shape_signature"])  # fixed shapes
                assert declared[name]["dtype"] == np.dtype(d["dtype"]).name == "float32"
                assert declared[name]["range"]
        expected = ({"style_image": [1, 256, 256, 3]}, {"style_vector": [1, manifest["style_dim"]]}) \
            if sig == "predict_style" else \
            ({"content": [1, SIZE, SIZE, 3], "style": [1, manifest["style_dim"]]}, {"stylized": [1, SIZE, SIZE, 3]})
        assert {t["name"]: t["shape"] for t in entry["inputs"]} == expected[0]
        assert {t["name"]: t["shape"] for t in entry["outputs"]} == expected[1]


def test_tflite_outputs_agree_with_the_package(exported, manifest, tiny_models_dir) -> None:
    out, _, _ = exported
    pkg = load_package(tiny_models_dir / "tiny" / "1")
    rng = np.random.default_rng(5)
    style_img = rng.random((1, 256, 256, 3), np.float32)
    content = rng.random((1, SIZE, SIZE, 3), np.float32)
    reference, vec32 = {}, None
    for fmt in ("tflite-fp32", "tflite-fp16", "tflite-int8"):
        b = create_backend("litert")
        b.load(pkg, BackendOptions(format=fmt, threads=1))
        vec = b.predict_style(style_img)
        vec32 = vec if vec32 is None else vec32
        reference[fmt] = (vec, b.stylize(content, vec32))  # each stylizes the fp32 vector, as fed below
        b.close()
    for entry in manifest["tflite"]:
        p = entry["precision"]
        runner = Interpreter(model_path=str(out / entry["file"])).get_signature_runner(entry["signature"])
        same_vec, same_out = reference[f"tflite-{p}"]
        if entry["signature"] == "predict_style":
            got = runner(style_image=style_img)["style_vector"]
            scale = np.abs(reference["tflite-fp32"][0]).max()
            assert np.abs(got - vec32).max() / scale <= TOLERANCE[p], entry["file"]
            assert np.abs(got - same_vec).max() / scale <= SAME_PRECISION, entry["file"]
        else:
            got = runner(content=content, style=vec32)["stylized"]
            assert got.shape == (1, SIZE, SIZE, 3)
            diff = np.abs(got - reference["tflite-fp32"][1])
            assert (diff.mean() <= INT8_PIXELS_MEAN) if p == "int8" else (diff.max() <= TOLERANCE[p]), entry["file"]
            assert np.abs(got - same_out).max() <= SAME_PRECISION, entry["file"]


def test_tflite_files_run_as_one_xnnpack_partition(exported, manifest) -> None:
    out, _, _ = exported
    for entry in manifest["tflite"]:
        parts = xnnpack_partitions(out / entry["file"])
        assert list(parts) == [entry["signature"]]
        assert parts[entry["signature"]].single, f"{entry['file']}: {parts}"


def test_core_ml_specs(exported, manifest) -> None:
    """What the converted ML Programs declare (Core ML predicts only on Apple platforms)."""
    out, _, _ = exported
    specs = json.loads((out / "specs.json").read_text())
    assert set(specs) == {"StylePredict.mlpackage", f"Stylize{SIZE}.mlpackage"}
    dim = manifest["style_dim"]
    expected = {"StylePredict.mlpackage": ({"style_image": [1, 256, 256, 3]}, {"style_vector": [1, dim]}),
                f"Stylize{SIZE}.mlpackage": ({"content": [1, SIZE, SIZE, 3], "style": [1, dim]},
                                             {"stylized": [1, SIZE, SIZE, 3]})}
    for name, spec in specs.items():
        assert spec["type"] == "mlProgram" and spec["version"] >= 6  # Core ML 5 (iOS 15) programs
        for side, want in zip(("inputs", "outputs"), expected[name]):
            assert {f["name"]: f["shape"] for f in spec[side]} == want
            assert {f["dtype"] for f in spec[side]} == {"FLOAT32"}
        assert "conv" in spec["ops"]
    for entry in manifest["coreml"]:  # mobile.json says what the specs say
        spec = specs[entry["file"]]
        for side in ("inputs", "outputs"):
            assert [(t["name"], t["shape"], t["dtype"]) for t in entry[side]] == \
                   [(f["name"], f["shape"], f["dtype"].lower()) for f in spec[side]]


BLOCKED = "import sys; sys.modules[sys.argv[1]] = None; from stylecast.client.cli import app; app(sys.argv[2:])"


@pytest.mark.parametrize("blocked, message", [
    ("tensorflow", "TensorFlow is not installed"),
    ("coremltools", "coremltools is not installed"),
])
def test_a_missing_converter_is_named(blocked, message, tiny_models_dir, tmp_path) -> None:
    args = ["model", "export-mobile", str(tiny_models_dir / "tiny" / "1"), "-o", str(tmp_path / "m"), "--size", "64"]
    if blocked == "tensorflow":
        args.append("--no-coreml")  # coremltools itself would import TensorFlow
    proc = subprocess.run([sys.executable, "-c", BLOCKED, blocked, *args], capture_output=True, text=True)
    assert proc.returncode == 1
    assert f"error: {message}" in proc.stderr
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("case, message", [
    ("tflite-only", "no SavedModel to convert from"),
    ("size", "sizes must be multiples of 16"),
    ("precision", "precisions must be among"),
    ("not-a-package", "not a model package folder"),
])
def test_export_mistakes(case, message, tiny_v2_dir, tiny_models_dir, tmp_path) -> None:
    from typer.testing import CliRunner

    from stylecast.client.cli import app

    package = tiny_v2_dir / "tiny" / "2" if case == "tflite-only" else tiny_models_dir / "tiny" / "1"
    args = ["model", "export-mobile", str(tmp_path if case == "not-a-package" else package), "-o", str(tmp_path / "m")]
    args += {"size": ["--size", "100"], "precision": ["--precision", "fp8"]}.get(case, [])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and message in result.output, result.output
    assert not (tmp_path / "m").exists()
