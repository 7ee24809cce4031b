"""Mobile export (``stylecast model export-mobile``): what an Android or iOS app needs.

From a package's SavedModel (its ``predict_style`` and ``stylize`` signatures), with every
input shape fixed (batch 1; the app chooses the frame sizes):

- TFLite, per precision (``fp16``: float16 weights; ``int8``: weights-only dynamic-range
  int8, float32 activations), ``predict_style_<p>.tflite`` (1×256×256×3 → 1×D) and
  ``stylize_<S>_<p>.tflite`` per size S (1×S×S×3 content + 1×D style → 1×S×S×3), each with
  one signature named after its endpoint;
- Core ML ML Programs (``coremltools``; float16 compute, float32 inputs and outputs, iOS 15+):
  ``StylePredict.mlpackage`` and ``Stylize<S>.mlpackage``.  Conversion runs on Linux;
  Core ML runs predictions only on Apple platforms, so only the conversion and the model
  specs are checked here;
- ``mobile.json``: each file's bytes and sha256 (an ``.mlpackage`` folder's: :func:`folder_sha256`),
  inputs and outputs as the converted files declare them (names,
  shapes, dtypes) with their value ranges, and the two-step pipeline.

Needs TensorFlow (the ``tf`` extra) and, for Core ML, coremltools (the ``mobile`` extra).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from stylecast.backends.package import PackageError, load_package
from stylecast.model.preprocess import STYLE_SIZE

MANIFEST = "mobile.json"
PRECISIONS = ("fp16", "int8")
RANGES = {  # what each tensor holds (by its signature name)
    "style_image": "RGB float32 in [0, 1]: the style image centre-cropped to a square, bilinear to 256x256, /255",
    "style_vector": "float32, unbounded: the style vector (compute once per style; blend and interpolate freely)",
    "content": "RGB float32 in [0, 1] (pixel / 255), NHWC",
    "style": "float32, unbounded: a style vector from predict_style",
    "stylized": "RGB float32 in [0, 1]; x 255, round and clip for 8-bit pixels",
}
PIPELINE = [
    "1. once per style: style image -> centre square -> bilinear 256x256 RGB -> /255 -> predict_style "
    "-> style vector 1xD (D = style_dim)",
    "2. per frame: frame -> resize to the chosen SxS (or crop) RGB -> /255 -> stylize(content, style) "
    "-> 1xSxSx3 in [0, 1] -> x255, round, clip",
    "strength s in [0, 1]: style = s * v_style + (1 - s) * v_content, v_content = predict_style of the "
    "frame's own centre square at 256x256 (refresh every few seconds, not per frame)",
    "blend: a weighted sum of style vectors with weights summing to 1",
]


class MobileExportError(Exception):
    """The package cannot be exported here; the message is one actionable line."""


@contextlib.contextmanager
def quiet_converters(verbose: bool = False) -> Iterator[None]:
    """Hold back what TensorFlow, the TFLite converter and coremltools write to stderr (C++ logs,
    version warnings, progress bars: ~70 lines per export) unless ``verbose``; if the body raises
    anything but :class:`MobileExportError`, the held-back log's last 4000 characters are written
    to stderr before the exception propagates.  Sets ``TF_CPP_MIN_LOG_LEVEL=3`` (unless set)."""
    if verbose:
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with tempfile.TemporaryFile() as log:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(log.fileno(), 2)
        text = open(log.fileno(), "w", buffering=1, closefd=False)  # noqa: SIM115 - closed below
        try:
            with contextlib.redirect_stderr(text):
                yield
        except MobileExportError:
            raise
        except BaseException:
            text.flush()
            log.seek(0)
            held = log.read().decode(errors="replace")[-4000:]
            os.dup2(saved, 2)
            sys.stderr.write(held)
            raise
        finally:
            text.close()
            os.dup2(saved, 2)
            os.close(saved)


def _tensorflow():
    try:
        import tensorflow as tf  # noqa: PLC0415 - the tf extra
    except ImportError:
        raise MobileExportError("TensorFlow is not installed: export-mobile converts with TensorFlow's converter "
                                "(pip install 'stylecast[tf,mobile]')") from None
    return tf


def _coremltools():
    try:
        import coremltools as ct  # noqa: PLC0415 - the mobile extra
    except ImportError:
        raise MobileExportError("coremltools is not installed (pip install 'stylecast[mobile]'), or pass "
                                "--no-coreml for the TFLite files only") from None
    return ct


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def folder_sha256(folder: Path) -> str:
    """Hex SHA-256 of a folder (an ``.mlpackage``): of the UTF-8 text with one line
    ``RELATIVE/POSIX/PATH<TAB>FILE_SHA256<LF>`` per file, sorted by path."""
    files = sorted((f.relative_to(folder).as_posix(), f) for f in folder.rglob("*") if f.is_file())
    return hashlib.sha256("".join(f"{rel}\t{_sha256(f)}\n" for rel, f in files).encode()).hexdigest()


def tflite_io(path: Path, signature: str) -> dict:
    """The inputs and outputs of one signature of a TFLite file, as LiteRT reports them:
    ``{"inputs": [{name, tensor, shape, dtype}], "outputs": [...]}`` (sorted by name)."""
    from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415 - the litert extra

    runner = Interpreter(model_path=str(path)).get_signature_runner(signature)

    def describe(details: dict) -> list[dict]:
        return [{"name": k, "tensor": d["name"], "shape": [int(v) for v in d["shape"]],
                 "dtype": np.dtype(d["dtype"]).name, "range": RANGES[k]} for k, d in sorted(details.items())]

    return {"inputs": describe(runner.get_input_details()), "outputs": describe(runner.get_output_details())}


def coreml_io(path: Path) -> dict:
    """The inputs and outputs of a Core ML model as its spec declares them (no prediction needed):
    ``{"inputs": [{name, shape, dtype}], "outputs": [...]}``."""
    ct = _coremltools()
    spec = ct.utils.load_spec(str(path))
    types = {v: k.lower() for k, v in ct.proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.items()}

    def describe(features) -> list[dict]:
        return [{"name": f.name, "shape": [int(v) for v in f.type.multiArrayType.shape],
                 "dtype": types[f.type.multiArrayType.dataType], "range": RANGES[f.name]} for f in features]

    return {"inputs": describe(spec.description.input), "outputs": describe(spec.description.output)}


def export_mobile(package_dir: str | Path, out_dir: str | Path, sizes: Sequence[int] = (512,),
                  precisions: Sequence[str] = PRECISIONS, coreml: bool = True) -> dict:
    """Write the mobile files of the package at ``package_dir`` into ``out_dir`` (created; files of
    the same names replaced; the files an earlier export listed in its ``mobile.json`` that this one
    does not write are removed, once this one is complete; other files are left alone) and return the
    ``mobile.json`` content.  ``sizes``: square frame sides
    (multiples of 16, 64…4096).  Raises :class:`MobileExportError` for a package without a SavedModel,
    a bad size or precision, or a missing converter."""
    bad = [s for s in sizes if s % 16 or not 64 <= s <= 4096]
    if bad or not sizes:
        raise MobileExportError(f"--size {bad or 'none'}: sizes must be multiples of 16 in 64..4096")
    if set(precisions) - set(PRECISIONS) or not precisions:
        raise MobileExportError(f"precisions must be among {PRECISIONS}, got {list(precisions)}")
    try:
        pkg = load_package(package_dir)
        if "savedmodel" not in pkg.artifacts or pkg.artifacts["savedmodel"].root is None:
            raise MobileExportError(f"{package_dir}: no SavedModel to convert from (it has "
                                    f"{', '.join(sorted(pkg.artifacts))}); a Magenta import already is TFLite: "
                                    "its tflite/ files run on Android as they are")
        pkg.verify(["savedmodel"])
    except PackageError as exc:
        raise MobileExportError(f"{package_dir}: {exc}") from None
    ct = _coremltools() if coreml else None
    tf = _tensorflow()
    from stylecast.model.export import write_tflite  # noqa: PLC0415 - imports Keras and TensorFlow

    art = pkg.artifact("savedmodel")
    loaded = tf.saved_model.load(str(pkg.file_path(art.root)))
    eps = {ep: art.endpoints[ep] for ep in ("predict_style", "stylize")}
    dim = pkg.style_dim

    def fixed(endpoint: str, shapes: dict[str, list[int]], output: str):
        sig = loaded.signatures[eps[endpoint]["signature"]]
        names = eps[endpoint]["inputs"]  # role -> signature input name
        specs = [tf.TensorSpec(shape, tf.float32, name=name) for name, shape in shapes.items()]

        @tf.function(input_signature=specs)
        def fn(*args):
            inputs = {names[role]: x for role, x in zip(("image",) if endpoint == "predict_style"
                                                         else ("content", "style"), args)}
            return {output: sig(**inputs)[eps[endpoint]["output"]]}

        return fn.get_concrete_function()

    graphs = {"predict_style": fixed("predict_style", {"style_image": [1, STYLE_SIZE, STYLE_SIZE, 3]}, "style_vector")}
    for s in sizes:
        graphs[f"stylize_{s}"] = fixed("stylize", {"content": [1, s, s, 3], "style": [1, dim]}, "stylized")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    earlier = _listed(out)
    manifest = {"format": "stylecast-mobile/1", "model": {"name": pkg.name, "version": pkg.version},
                "style_dim": dim, "style_image_size": STYLE_SIZE, "sizes": list(sizes), "pipeline": PIPELINE,
                "tflite": [], "coreml": []}
    with tempfile.TemporaryDirectory(prefix="stylecast-mobile-") as tmp:
        for key, cf in graphs.items():
            endpoint = "predict_style" if key == "predict_style" else "stylize"
            sm = Path(tmp) / key
            holder = tf.Module()
            holder.source = loaded  # tracks the variables the function captures
            tf.saved_model.save(holder, str(sm), signatures={endpoint: cf})
            for p in precisions:
                path = out / f"{key}_{p}.tflite"
                write_tflite(sm, path, p, endpoint)
                manifest["tflite"].append({"file": path.name, "signature": endpoint, "precision": p,
                                           "bytes": path.stat().st_size, "sha256": _sha256(path),
                                           **tflite_io(path, endpoint)})
            if ct is not None:
                manifest["coreml"].append(_write_coreml(ct, cf, out, key, endpoint, f"stylecast {pkg.key}"))
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    for name in earlier - _listed(out):
        stale = out / name
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale)
        else:
            stale.unlink(missing_ok=True)
    return manifest


def _listed(out: Path) -> set[str]:
    """The file names the ``mobile.json`` in ``out`` lists (plain names only; none if it is absent or
    unreadable)."""
    try:
        listed = json.loads((out / MANIFEST).read_text())
        names = {e["file"] for e in listed.get("tflite", []) + listed.get("coreml", [])}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return set()
    return {n for n in names if isinstance(n, str) and n == Path(n).name and n not in ("", ".", "..", MANIFEST)}


def _write_coreml(ct, cf, out: Path, key: str, endpoint: str, model: str) -> dict:
    """One ML Program from a fixed-shape concrete function; its features renamed to the
    signature names (the converter names outputs after graph nodes)."""
    name = "StylePredict" if endpoint == "predict_style" else f"Stylize{key.rsplit('_', 1)[1]}"
    inputs = [ct.TensorType(name=t.name, shape=tuple(t.shape), dtype=np.float32) for t in cf.structured_input_signature[0]]
    mlmodel = ct.convert([cf], source="tensorflow", convert_to="mlprogram", inputs=inputs,
                         minimum_deployment_target=ct.target.iOS15, compute_precision=ct.precision.FLOAT16)
    spec = mlmodel.get_spec()
    (wanted,) = cf.structured_outputs
    for feature in list(spec.description.output):
        ct.utils.rename_feature(spec, feature.name, wanted, rename_inputs=False)
    spec.description.metadata.shortDescription = f"{model} {endpoint}: inputs and outputs in mobile.json"
    path = out / f"{name}.mlpackage"
    if path.exists():
        shutil.rmtree(path)
    ct.models.MLModel(spec, weights_dir=mlmodel.weights_dir, skip_model_load=True).save(str(path))
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return {"file": path.name, "signature": endpoint, "minimum_deployment_target": "iOS15",
            "compute_precision": "float16", "bytes": size, "sha256": folder_sha256(path), **coreml_io(path)}
