"""Import a user's own Magenta arbitrary-stylization TFLite pair as a model package.

Magenta publishes the style predictor (``style_image`` 1×256×256×3 → 1×1×1×100)
and the transformer (content 1×384×384×3 + the style vector → stylized) as two
signature-less TFLite files.  The importer copies both into
``OUT_DIR/NAME/VERSION/tflite/`` as one two-file artifact whose endpoints bind
tensors by name, records ``fixed_hw`` when the transformer's content size is
baked in (backends then scale to it and back), and writes the manifest.  Uses
LiteRT only (no TensorFlow).

With ``resizable=True`` the transformer file is rewritten to take any content
size instead (see :func:`make_resizable`): at 384² it computes exactly what the
original does.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter
from ai_edge_litert.tools import flatbuffer_utils

from stylecast.backends.package import ModelPackage, PackageError, write_manifest

PREDICT_FILE = "tflite/style_predict.tflite"
TRANSFER_FILE = "tflite/style_transfer.tflite"

# Ops whose TFLite kernels derive every shape from their inputs: a graph of only
# these (after the nearest-neighbour resizes are rewritten) runs at any size.
_SHAPE_AGNOSTIC = {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "SUB", "MUL", "MEAN", "MIRROR_PAD", "PAD",
                   "SQUARED_DIFFERENCE", "RSQRT", "LOGISTIC", "RELU", "RELU6", "QUANTIZE", "DEQUANTIZE"}


def _io(path: Path) -> tuple[Interpreter, list[dict], list[dict]]:
    try:
        it = Interpreter(model_path=str(path))
    except (ValueError, RuntimeError) as exc:
        raise PackageError(f"{path}: not a TFLite model ({exc})") from exc
    return it, it.get_input_details(), it.get_output_details()


def weight_precision(path: str | Path) -> str:
    """``fp16``, ``int8`` or ``fp32``: how a TFLite file stores its weights (by tensor dtypes)."""
    it, _, _ = _io(Path(path))
    dtypes = {np.dtype(t["dtype"]) for t in it.get_tensor_details()}
    if np.dtype(np.float16) in dtypes:
        return "fp16"
    if dtypes & {np.dtype(np.int8), np.dtype(np.uint8)}:
        return "int8"
    return "fp32"


def _size(shape) -> int:
    return int(np.prod(shape[1:]))


def _endpoints(predict: Path, transfer: Path) -> tuple[dict, int]:
    _, p_in, p_out = _io(predict)
    if len(p_in) != 1 or len(p_out) != 1 or list(p_in[0]["shape_signature"][1:]) != [256, 256, 3]:
        raise PackageError(f"{predict.name}: expected a style predictor (one 1×256×256×3 input, one output); "
                           "were the two files given in the right order?")
    style_dim = _size(p_out[0]["shape_signature"])
    _, t_in, t_out = _io(transfer)
    content = [d for d in t_in if len(d["shape_signature"]) == 4 and d["shape_signature"][-1] == 3]
    style = [d for d in t_in if d["name"] != content[0]["name"] and _size(d["shape_signature"]) == style_dim] \
        if len(content) == 1 else []
    if len(t_in) != 2 or len(content) != 1 or len(style) != 1 or len(t_out) != 1:
        raise PackageError(f"{transfer.name}: expected a style transformer with a N×H×W×3 content input and a "
                           f"{style_dim}-value style input (inputs: {[d['name'] for d in t_in]})")
    h, w = (int(v) for v in content[0]["shape_signature"][1:3])
    eps = {
        "predict_style": {"file": PREDICT_FILE, "inputs": {"image": p_in[0]["name"]},
                          "output": p_out[0]["name"]},
        "stylize": {"file": TRANSFER_FILE,
                    "inputs": {"content": content[0]["name"], "style": style[0]["name"]},
                    "output": t_out[0]["name"], "fixed_hw": [h, w] if h > 0 and w > 0 else None},
    }
    return eps, style_dim


def _opcode(model: schema.ModelT, builtin: int) -> int:
    for i, code in enumerate(model.operatorCodes):
        if flatbuffer_utils.get_builtin_code_from_operator_code(code) == builtin:
            return i
    code = schema.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _operator(opcode: int, inputs: list[int], outputs: list[int], options_type: int, options) -> schema.OperatorT:
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = opcode, inputs, outputs
    op.builtinOptionsType, op.builtinOptions = options_type, options
    return op


def make_resizable(src: str | Path, dst: str | Path) -> None:
    """Rewrite a transformer baked to one content size so that it takes any H, W (multiples of 4).

    Magenta's 2020 transformers are fully convolutional except for their three
    nearest-neighbour resizes, whose output sizes are constants (192², 384², 384²):
    that is why ``resize_tensor_input`` alone gives wrong output.  Each resize by an
    integer factor k becomes k² copies concatenated on channels + DEPTH_TO_SPACE(k)
    (the same values, any size, and XNNPACK runs both), a factor of 1 is dropped, and
    the content input is declared 1×-1×-1×3.  Raises :class:`PackageError` for graphs
    holding other size-dependent ops.
    """
    model = flatbuffer_utils.read_model(Path(src))
    if len(model.subgraphs) != 1:
        raise PackageError(f"{Path(src).name}: expected one subgraph, found {len(model.subgraphs)}")
    sub = model.subgraphs[0]
    names = [flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) for op in sub.operators]
    unknown = set(names) - _SHAPE_AGNOSTIC - {"RESIZE_NEAREST_NEIGHBOR"}
    if unknown:
        raise PackageError(f"{Path(src).name}: cannot lift its fixed size: ops {sorted(unknown)} may depend on it")
    concat = _opcode(model, schema.BuiltinOperator.CONCATENATION)
    d2s = _opcode(model, schema.BuiltinOperator.DEPTH_TO_SPACE)
    alias: dict[int, int] = {}
    ops = []
    for op, name in zip(sub.operators, names):
        op.inputs = [alias.get(int(t), int(t)) for t in op.inputs]
        if name != "RESIZE_NEAREST_NEIGHBOR":
            ops.append(op)
            continue
        x, out = op.inputs[0], int(op.outputs[0])
        size = model.buffers[sub.tensors[op.inputs[1]].buffer].data
        oh, ow = np.frombuffer(bytes(size), dtype=np.int32) if size is not None else (0, 0)
        n, h, w, c = (int(v) for v in sub.tensors[x].shape)
        if not (h and w and oh % h == 0 and ow % w == 0 and oh // h == ow // w):
            raise PackageError(f"{Path(src).name}: resize {h}×{w} → {oh}×{ow} is not an integer upscale")
        k = int(oh // h)
        if k == 1:
            alias[out] = x
            continue
        tiled = schema.TensorT()
        src_t = sub.tensors[x]
        tiled.name, tiled.type, tiled.quantization = src_t.name + b"/tiled", src_t.type, src_t.quantization
        tiled.shape, tiled.buffer = [n, h, w, c * k * k], 0
        sub.tensors.append(tiled)
        t = len(sub.tensors) - 1
        cat_opts, d2s_opts = schema.ConcatenationOptionsT(), schema.DepthToSpaceOptionsT()
        cat_opts.axis, d2s_opts.blockSize = 3, k
        ops.append(_operator(concat, [x] * (k * k), [t], schema.BuiltinOptions.ConcatenationOptions, cat_opts))
        ops.append(_operator(d2s, [t], [out], schema.BuiltinOptions.DepthToSpaceOptions, d2s_opts))
    sub.operators = ops
    sub.outputs = [alias.get(int(t), int(t)) for t in sub.outputs]
    for i in sub.inputs:
        tensor = sub.tensors[i]
        if len(tensor.shape) == 4 and tensor.shape[-1] == 3:
            tensor.shapeSignature = [int(tensor.shape[0]), -1, -1, 3]
    Path(dst).write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))


def import_magenta(predict_tflite: str | Path, transfer_tflite: str | Path, out_dir: str | Path,
                   name: str = "magenta", version: str = "1", overwrite: bool = False,
                   resizable: bool = False) -> ModelPackage:
    """Copy Magenta's predictor and transformer files into ``out_dir/NAME/VERSION/``.

    The artifact format follows the transformer's weights (``tflite-int8`` for the
    quantized file, ``tflite-fp16`` for the f16 one).  A transformer baked to one size
    is fed by scaling (``fixed_hw``), or, with ``resizable``, rewritten by
    :func:`make_resizable` to run at the content's own size.  Raises
    :class:`PackageError` for files that are not a Magenta pair, or when the
    package exists and not ``overwrite``.
    """
    predict, transfer = Path(predict_tflite), Path(transfer_tflite)
    for p in (predict, transfer):
        if not p.is_file():
            raise PackageError(f"{p}: no such file")
    eps, style_dim = _endpoints(predict, transfer)
    fmt = f"tflite-{weight_precision(transfer)}"
    root = Path(out_dir) / name / version
    if root.exists():
        if not overwrite:
            raise PackageError(f"{root} exists: pass --overwrite (overwrite=True from Python) to replace it")
        shutil.rmtree(root)
    (root / "tflite").mkdir(parents=True)
    shutil.copyfile(predict, root / PREDICT_FILE)
    lift = resizable and eps["stylize"]["fixed_hw"] is not None
    if lift:
        make_resizable(transfer, root / TRANSFER_FILE)
        eps["stylize"]["fixed_hw"] = None
    else:
        shutil.copyfile(transfer, root / TRANSFER_FILE)
    artifacts = {fmt: {"files": [PREDICT_FILE, TRANSFER_FILE], "endpoints": eps}}
    return write_manifest(root, name, version, style_dim, artifacts,
                          source={"kind": "magenta", "predict": predict.name, "transfer": transfer.name,
                                  "resizable": lift})
