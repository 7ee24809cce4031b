"""Import a user's own Magenta arbitrary-stylization TFLite pair as a model package.

Magenta publishes the style predictor (``style_image`` 1×256×256×3 → 1×1×1×100)
and the transformer (content 1×384×384×3 + the style vector → stylized) as two
signature-less TFLite files.  The importer copies both into
``OUT_DIR/NAME/VERSION/tflite/`` as one two-file artifact whose endpoints bind
tensors by name, records ``fixed_hw`` when the transformer's content size is
baked in (backends then scale to it and back), and writes the manifest.  Uses
LiteRT only (no TensorFlow).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from stylecast.model.package import ModelPackage, PackageError, write_manifest

PREDICT_FILE = "tflite/style_predict.tflite"
TRANSFER_FILE = "tflite/style_transfer.tflite"


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


def import_magenta(predict_tflite: str | Path, transfer_tflite: str | Path, out_dir: str | Path,
                   name: str = "magenta", version: str = "1", overwrite: bool = False) -> ModelPackage:
    """Copy Magenta's predictor and transformer files into ``out_dir/NAME/VERSION/``.

    The artifact format follows the transformer's weights (``tflite-int8`` for the
    quantized file, ``tflite-fp16`` for the f16 one).  Raises :class:`PackageError`
    for files that are not a Magenta pair, or when the package exists and not ``overwrite``.
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
            raise PackageError(f"{root} exists (pass overwrite=True to replace it)")
        shutil.rmtree(root)
    (root / "tflite").mkdir(parents=True)
    shutil.copyfile(predict, root / PREDICT_FILE)
    shutil.copyfile(transfer, root / TRANSFER_FILE)
    artifacts = {fmt: {"files": [PREDICT_FILE, TRANSFER_FILE], "endpoints": eps}}
    return write_manifest(root, name, version, style_dim, artifacts,
                          source={"kind": "magenta", "predict": predict.name, "transfer": transfer.name})
