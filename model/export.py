"""Export a predictor + transformer pair to a model package (``stylecast model export``).

Formats (see DESIGN §1 "Model packages"):

- ``savedmodel``: two signatures, ``predict_style`` (``style_image`` → ``style_vector``)
  and ``stylize`` (``content``, ``style`` → ``stylized``), dynamic batch, H and W;
- ``tflite-fp32`` / ``tflite-fp16`` / ``tflite-int8``: one file per endpoint, each with
  one signature of the endpoint's name, converted from that SavedModel (int8 =
  weights-only dynamic range, depthwise kernels kept float32 for XNNPACK), so a per-shape
  stylize interpreter carries no predictor;
- ``onnx``: one file per endpoint via tf2onnx, same input names.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from stylecast.backends.package import FORMATS, ModelPackage, write_manifest
from stylecast.model.networks import STYLE_DIM

TFLITE_FORMATS = {"tflite-fp32": "fp32", "tflite-fp16": "fp16", "tflite-int8": "int8"}
SIGNATURE_IO = {
    "predict_style": ({"image": "style_image"}, "style_vector"),
    "stylize": ({"content": "content", "style": "style"}, "stylized"),
}


def _functions(predictor: keras.Model, transformer: keras.Model, style_dim: int) -> dict:
    """The two endpoints as traced ``tf.function``s with named, dynamic-shape inputs."""
    @tf.function(input_signature=[tf.TensorSpec([None, 256, 256, 3], tf.float32, name="style_image")])
    def predict_style(style_image):
        return {"style_vector": predictor(style_image, training=False)}

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="content"),
                                  tf.TensorSpec([None, style_dim], tf.float32, name="style")])
    def stylize(content, style):
        return {"stylized": transformer([content, style], training=False)}

    return {"predict_style": predict_style, "stylize": stylize}


def _endpoint(ep: str, file: str | None = None) -> dict:
    """The manifest entry of endpoint ``ep`` (its own ``file`` for TFLite; none in a SavedModel)."""
    inputs, output = SIGNATURE_IO[ep]
    spec = {"inputs": inputs, "output": output, "fixed_hw": None}
    if file is not None:
        spec["file"] = file
    spec["signature"] = ep
    return spec


def _write_savedmodel(models: Sequence[keras.Model], fns: dict, path: Path) -> None:
    archive = keras.export.ExportArchive()
    for m in models:
        archive.track(m)
    for name, fn in fns.items():
        archive.add_endpoint(name, fn)
    archive.write_out(str(path), verbose=False)


def write_tflite(savedmodel: Path, path: Path, precision: str, endpoint: str) -> None:
    """Convert one signature of a SavedModel to a TFLite file: ``precision`` fp32, fp16 (float16
    weights) or int8 (weights-only dynamic range; depthwise kernels stay float32, see
    :func:`float_depthwise_kernels`)."""
    conv = tf.lite.TFLiteConverter.from_saved_model(str(savedmodel), signature_keys=[endpoint])
    if precision in ("fp16", "int8"):
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if precision == "fp16":
        conv.target_spec.supported_types = [tf.float16]
    flat = conv.convert()
    path.write_bytes(float_depthwise_kernels(flat) if precision == "int8" else flat)


def float_depthwise_kernels(flat: bytes) -> bytes:
    """A dynamic-range TFLite model with each int8 depthwise kernel of a float op turned back into
    float32 (its dequantized values: the same numbers the hybrid kernel computes with).

    The converter quantizes every weight of 1,024 elements or more; XNNPACK runs hybrid
    (int8-weight, float-activation) CONV_2D and FULLY_CONNECTED but not DEPTHWISE_CONV_2D, which
    would then run outside the delegate and split the graph (a 3×3 kernel over 128 channels is
    1,152 elements). Float kernels keep every op on one XNNPACK partition."""
    from ai_edge_litert import schema_py_generated as schema  # noqa: PLC0415
    from ai_edge_litert.tools import flatbuffer_utils  # noqa: PLC0415

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flat))
    for sub in model.subgraphs:
        for op in sub.operators:
            code = flatbuffer_utils.get_builtin_code_from_operator_code(model.operatorCodes[op.opcodeIndex])
            kernel = sub.tensors[op.inputs[1]] if code == schema.BuiltinOperator.DEPTHWISE_CONV_2D else None
            if kernel is None or kernel.type != schema.TensorType.INT8 \
                    or sub.tensors[op.inputs[0]].type != schema.TensorType.FLOAT32:
                continue
            q, buf = kernel.quantization, model.buffers[kernel.buffer]
            shape = [1] * len(kernel.shape)
            shape[q.quantizedDimension] = -1
            values = np.frombuffer(bytes(buf.data), np.int8).reshape(kernel.shape) * np.reshape(q.scale, shape)
            buf.data = np.frombuffer(values.astype(np.float32).tobytes(), np.uint8)
            kernel.type, kernel.quantization = schema.TensorType.FLOAT32, None
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _write_onnx(fns: dict, out_dir: Path) -> dict:
    import tf2onnx  # noqa: PLC0415 - optional, only for this format

    endpoints = {}
    for ep in SIGNATURE_IO:
        fn = fns[ep]
        rel = f"onnx/{ep}.onnx"
        proto, _ = tf2onnx.convert.from_function(fn, input_signature=fn.input_signature, opset=17,
                                                 output_path=str(out_dir / rel))
        inputs, output = SIGNATURE_IO[ep]
        graph_inputs = {i.name.split(":")[0]: i.name for i in proto.graph.input}
        endpoints[ep] = {"file": rel, "fixed_hw": None, "output": proto.graph.output[0].name,
                         "inputs": {k: graph_inputs[v] for k, v in inputs.items()}}
    return endpoints


def export_package(predictor: keras.Model, transformer: keras.Model, out_dir: str | Path, name: str,
                   version: str, formats: Sequence[str] = FORMATS, **extra) -> ModelPackage:
    """Write ``out_dir/NAME/VERSION/`` with the requested formats and a verified manifest."""
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown formats {sorted(unknown)}; choose from {FORMATS}")
    root = Path(out_dir) / name / version
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    style_dim = int(transformer.inputs[1].shape[-1])
    fns = _functions(predictor, transformer, style_dim)
    artifacts: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        sm = root / "savedmodel" if "savedmodel" in formats else Path(tmp) / "savedmodel"
        _write_savedmodel((predictor, transformer), fns, sm)
        if "savedmodel" in formats:
            artifacts["savedmodel"] = {"root": "savedmodel", "endpoints": {ep: _endpoint(ep) for ep in SIGNATURE_IO}}
        for fmt, precision in TFLITE_FORMATS.items():
            if fmt in formats:
                (root / "tflite" / precision).mkdir(parents=True)
                endpoints = {}
                for ep in SIGNATURE_IO:
                    rel = f"tflite/{precision}/{ep}.tflite"
                    write_tflite(sm, root / rel, precision, ep)
                    endpoints[ep] = _endpoint(ep, rel)
                artifacts[fmt] = {"files": [e["file"] for e in endpoints.values()], "endpoints": endpoints}
    if "onnx" in formats:
        (root / "onnx").mkdir()
        eps = _write_onnx(fns, root)
        artifacts["onnx"] = {"files": [e["file"] for e in eps.values()], "endpoints": eps}
    return write_manifest(root, name, version, style_dim, artifacts, **extra)


def transformer_tflite(transformer: keras.Model, path: str | Path, precision: str = "fp32") -> None:
    """Write one transformer alone as a TFLite file with a ``stylize`` signature
    (``precision`` fp32 / fp16 / int8 as the package formats): for timing candidates."""
    style_dim = int(transformer.inputs[1].shape[-1])

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="content"),
                                  tf.TensorSpec([None, style_dim], tf.float32, name="style")])
    def stylize(content, style):
        return {"stylized": transformer([content, style], training=False)}

    with tempfile.TemporaryDirectory() as tmp:
        _write_savedmodel((transformer,), {"stylize": stylize}, Path(tmp) / "sm")
        write_tflite(Path(tmp) / "sm", Path(path), precision, "stylize")


def tiny_test_package(out_dir: str | Path, formats: Sequence[str] = FORMATS, seed: int = 0,
                      version: str = "1") -> ModelPackage:
    """A small randomly initialised model exported like the real one: a fixture for tests
    of serving mechanics (never the built-in model).

    A fresh predictor maps every image to almost the same vector and fresh style
    projections barely move the output, so tests of strength, blends and search could
    not fail: its batch norms are calibrated on a few synthetic images and its head
    rescaled so that different images give vectors of unit spread, and the style
    projections are scaled up so that different vectors give different outputs.
    """
    from stylecast.model.networks import (  # noqa: PLC0415
        ConditionalInstanceNorm, PredictorSpec, TransformerSpec, build_predictor, build_transformer)

    keras.utils.set_random_seed(seed)
    transformer = build_transformer(TransformerSpec(stem=8, mid=8, deep=16, blocks=1, expand=1))
    predictor = build_predictor(PredictorSpec(widths=(8, 16, 16, 32), strides=(2, 4, 4, 2), hidden=32))
    rng = np.random.default_rng(seed)
    for layer in transformer.layers:
        if isinstance(layer, ConditionalInstanceNorm):
            k = layer.proj.kernel
            k.assign(rng.normal(0, 0.3, k.shape).astype("float32"))
    y, x = np.mgrid[0:256, 0:256] / 256.0
    probes = np.stack([np.stack([0.5 + 0.5 * np.sin(rng.uniform(2, 30) * x + rng.uniform(2, 30) * y
                                                    + rng.uniform(0, 6)) for _ in range(3)], -1)
                       for _ in range(16)]).astype("float32")
    for bn in [layer for layer in predictor.layers if isinstance(layer, keras.layers.BatchNormalization)]:
        x = np.asarray(keras.Model(predictor.input, bn.input)(probes))  # calibrate on the probes, in order
        bn.moving_mean.assign(x.mean((0, 1, 2)))
        bn.moving_variance.assign(x.var((0, 1, 2)))
    hidden = np.asarray(keras.Model(predictor.input, predictor.get_layer("hidden").output)(probes))
    head = predictor.get_layer("style_vector")
    kernel = rng.normal(0, 1, head.kernel.shape) / ((hidden.std(0).mean() + 1e-9) * np.sqrt(hidden.shape[1]))
    head.kernel.assign(kernel.astype("float32"))
    head.bias.assign((-hidden.mean(0) @ kernel).astype("float32"))
    return export_package(predictor, transformer, out_dir, "tiny", version, formats, purpose="test fixture")


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, name: str, version: str,
                      formats: Sequence[str] = FORMATS) -> ModelPackage:
    """Export a training checkpoint folder (``predictor.keras`` + ``transformer.keras`` and
    their ``.json`` step records, as written by ``distill``) to a package."""
    ckpt = Path(checkpoint)
    predictor = keras.saving.load_model(ckpt / "predictor.keras", compile=False)
    transformer = keras.saving.load_model(ckpt / "transformer.keras", compile=False)
    training = {}
    for net in ("predictor", "transformer"):
        meta = ckpt / f"{net}.json"
        if meta.exists():
            training[f"{net}_steps"] = json.loads(meta.read_text())["step"]
    if int(transformer.inputs[1].shape[-1]) != STYLE_DIM:
        raise ValueError(f"transformer style input is not {STYLE_DIM}-d")
    return export_package(predictor, transformer, out_dir, name, version, formats, training=training)
