"""A Keras port of the Magenta teacher transformer, read from its TFLite file.

Magenta's ``style_transfer_f16_384.tflite`` stores its weights as fp16 constants
behind DEQUANTIZE ops and uses a dozen op types.  :func:`extract_graph` reads the
op list and those constants (needs only LiteRT's flatbuffer tools, no TensorFlow)
into a compact :class:`TeacherGraph` that :meth:`TeacherGraph.save` writes to one
``.npz`` (≈ 0.5 MB: what ``make train-gpu`` carries instead of the TFLite file).
:class:`TeacherTransformer` replays that graph with ``keras.ops`` only, so it runs
on any Keras backend (TensorFlow here, PyTorch on a GPU) inside a training step:

- content N×H×W×3 float32 [0,1] (H, W multiples of 4; any size, the fixed 384²
  nearest-neighbour resizes become integer repeats) + style N×100 → N×H×W×3 [0,1];
- with ``features=True`` also the activations at the block boundaries, keyed by
  :data:`TAPS` (``trunk_in`` N×H/4×W/4×32, ``res1``…``res5`` the residual blocks'
  outputs, ``up1`` N×H/2×W/2×16, ``up2`` N×H×W×8).

At 384² it matches LiteRT running the same file to within fp32 rounding of the fp16
weights (``tests/test_magenta.py`` states the tolerance).  The teacher is never
shipped or committed; it is read from ``../shared/assets`` at run time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import ops

TEACHER_F16 = "style_transfer_f16_384.tflite"
# Tap name → the TFLite tensor whose value it is (block boundaries of the teacher).
TAPS = {
    "trunk_in": "transformer/contract/conv3/Relu",
    **{f"res{i}": f"transformer/residual/residual{i}/add" for i in range(1, 6)},
    "up1": "transformer/expand/conv1/conv/Relu",
    "up2": "transformer/expand/conv2/conv/Relu",
}
_OPS = {"CONV_2D", "MIRROR_PAD", "MEAN", "SQUARED_DIFFERENCE", "ADD", "SUB", "MUL", "RSQRT",
        "RESIZE_NEAREST_NEIGHBOR", "LOGISTIC", "DEQUANTIZE", "RELU"}


@dataclass
class TeacherGraph:
    """The op list (``ops``: dicts of op, inputs, outputs, options), constants by tensor id,
    tensor names and the graph's content/style inputs and output ids."""

    ops: list[dict]
    consts: dict[int, np.ndarray]
    names: dict[int, str]
    content: int
    style: int
    output: int

    def save(self, path: str | Path) -> None:
        meta = {"ops": self.ops, "names": {str(k): v for k, v in self.names.items()},
                "content": self.content, "style": self.style, "output": self.output}
        arrays = {f"c{k}": v for k, v in self.consts.items()}
        np.savez(path, graph=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)

    @classmethod
    def load(cls, path: str | Path) -> TeacherGraph:
        with np.load(path) as z:
            meta = json.loads(bytes(z["graph"]).decode())
            consts = {int(k[1:]): z[k] for k in z.files if k != "graph"}
        return cls(meta["ops"], consts, {int(k): v for k, v in meta["names"].items()},
                   meta["content"], meta["style"], meta["output"])

    def tap_ids(self) -> dict[str, int]:
        by_name = {v: k for k, v in self.names.items()}
        return {tap: by_name[name] for tap, name in TAPS.items()}


def extract_graph(tflite: str | Path) -> TeacherGraph:
    """Read Magenta's transformer TFLite file into a :class:`TeacherGraph`.

    Raises ``ValueError`` for a file with other op types or more than one subgraph.
    """
    from ai_edge_litert.tools import flatbuffer_utils as fu  # noqa: PLC0415

    model = fu.read_model(str(tflite))
    if len(model.subgraphs) != 1:
        raise ValueError(f"{tflite}: expected one subgraph")
    sub = model.subgraphs[0]
    consts: dict[int, np.ndarray] = {}
    for i, t in enumerate(sub.tensors):
        data = model.buffers[t.buffer].data
        if data is not None and len(data):
            dtype = {0: np.float32, 1: np.float16, 2: np.int32, 4: np.int64}[t.type]
            shape = [] if t.shape is None else [int(s) for s in t.shape]
            consts[i] = np.frombuffer(bytes(data), dtype=dtype).reshape(shape).copy()
    names = {i: t.name.decode() for i, t in enumerate(sub.tensors)}
    shapes = {i: (None if t.shape is None else [int(s) for s in t.shape]) for i, t in enumerate(sub.tensors)}
    ops = []
    for op in sub.operators:
        kind = fu.opcode_to_name(model, op.opcodeIndex)
        if kind not in _OPS:
            raise ValueError(f"{tflite}: unsupported op {kind}")
        o = op.builtinOptions
        opts = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in vars(o).items()
                if isinstance(v, (int, float, bool))} if o is not None else {}
        ins = [int(j) for j in op.inputs]
        if kind == "RESIZE_NEAREST_NEIGHBOR":  # the size is a constant: keep the integer factor
            h_in, h_out = shapes[ins[0]][1], int(consts[ins[1]][0])
            opts["factor"] = h_out // h_in
        ops.append({"op": kind, "inputs": ins, "outputs": [int(j) for j in op.outputs], "options": opts})
    content = next(i for i in sub.inputs if shapes[int(i)][-1] == 3)
    style = next(i for i in sub.inputs if int(i) != int(content))
    return TeacherGraph(ops, consts, names, int(content), int(style), int(sub.outputs[0]))


def _teacher_graph(graph: TeacherGraph | str | Path) -> TeacherGraph:
    if isinstance(graph, TeacherGraph):
        return graph
    p = Path(graph)
    return extract_graph(p) if p.suffix == ".tflite" else TeacherGraph.load(p)


def build_teacher(graph: TeacherGraph | str | Path, features: bool = False, name: str = "teacher"):
    """A frozen ``keras.Model``: [content N×H×W×3, style N×100] → stylized (and, with
    ``features``, a dict of :data:`TAPS` activations as further outputs)."""
    g = _teacher_graph(graph)
    content = keras.Input((None, None, 3), name="content")
    style = keras.Input((100,), name="style")
    outs = TeacherTransformer(g, features=features, name="teacher_graph")([content, style])
    model = keras.Model([content, style], outs, name=name)
    model.trainable = False
    return model



class TeacherTransformer(keras.layers.Layer):
    """Replays a :class:`TeacherGraph` with ``keras.ops`` (frozen; fp16 weights held as fp32)."""

    def __init__(self, graph: TeacherGraph, features: bool = False, **kw):
        super().__init__(trainable=False, **kw)
        self.graph, self.features = graph, features
        self.taps = graph.tap_ids()
        # Weights: the DEQUANTIZE inputs (fp16) as fp32 non-trainable variables.
        self.w = {}
        for op in graph.ops:
            if op["op"] == "DEQUANTIZE":
                src, dst = op["inputs"][0], op["outputs"][0]
                value = graph.consts[src].astype(np.float32)
                self.w[dst] = self.add_weight(shape=value.shape, initializer=keras.initializers.Constant(value),
                                              trainable=False, name=f"t{dst}")

    def _value(self, t: int, env: dict):
        if t in env:
            return env[t]
        if t in self.w:
            return self.w[t]
        return ops.convert_to_tensor(self.graph.consts[t].astype(np.float32))

    def call(self, inputs):
        content, style = inputs
        g = self.graph
        env = {g.content: content, g.style: ops.reshape(style, (-1, 1, 1, 100))}
        for op in g.ops:
            kind, ins, opts = op["op"], op["inputs"], op["options"]
            if kind == "DEQUANTIZE":
                continue
            x = self._value(ins[0], env)
            if kind == "CONV_2D":
                k = ops.transpose(self._value(ins[1], env), (1, 2, 3, 0))  # OHWI → HWIO
                pad = "valid" if opts["padding"] == 1 else "same"
                y = ops.conv(x, k, strides=(opts["strideH"], opts["strideW"]), padding=pad)
                if len(ins) > 2 and ins[2] >= 0:
                    y = y + self._value(ins[2], env)
            elif kind == "MIRROR_PAD":
                p = g.consts[ins[1]].tolist()
                y = ops.pad(x, p, mode="reflect" if opts.get("mode", 0) == 0 else "symmetric")
            elif kind == "MEAN":
                axes = tuple(int(a) for a in np.atleast_1d(g.consts[ins[1]]))
                y = ops.mean(x, axis=axes, keepdims=bool(opts.get("keepDims", False)))
            elif kind == "SQUARED_DIFFERENCE":
                y = ops.square(x - self._value(ins[1], env))
            elif kind == "ADD":
                y = x + self._value(ins[1], env)
            elif kind == "SUB":
                y = x - self._value(ins[1], env)
            elif kind == "MUL":
                y = x * self._value(ins[1], env)
            elif kind == "RSQRT":
                y = ops.rsqrt(x)
            elif kind == "LOGISTIC":
                y = ops.sigmoid(x)
            elif kind == "RELU":
                y = ops.relu(x)
            elif kind == "RESIZE_NEAREST_NEIGHBOR":
                f = opts["factor"]
                y = x if f == 1 else ops.repeat(ops.repeat(x, f, axis=1), f, axis=2)
            else:  # pragma: no cover - extract_graph refuses other ops
                raise ValueError(kind)
            if opts.get("fusedActivationFunction") == 1:
                y = ops.relu(y)
            env[op["outputs"][0]] = y
        out = env[g.output]
        if not self.features:
            return out
        return {"stylized": out, **{k: env[t] for k, t in self.taps.items()}}

    def compute_output_spec(self, inputs):
        content = inputs[0]
        n, h, w = content.shape[0], content.shape[1], content.shape[2]
        img = keras.KerasTensor((n, h, w, 3))
        if not self.features:
            return img
        q = lambda s, c: keras.KerasTensor((n, None if h is None else h // s,  # noqa: E731
                                            None if w is None else w // s, c))
        return {"stylized": img, "trunk_in": q(4, 32), **{f"res{i}": q(4, 32) for i in range(1, 6)},
                "up1": q(2, 16), "up2": q(1, 8)}

