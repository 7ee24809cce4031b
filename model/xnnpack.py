"""How a TFLite file partitions under the XNNPACK delegate (a model-quality check).

An op XNNPACK cannot run (MIRROR_PAD, a dynamic resize, a Flex op) splits the
graph: the interpreter then hops between the delegate and the reference
kernels, which costs both speed and threads.  The LiteRT Python API only shows
the nodes of subgraph 0, so each signature's subgraph is first copied into a
one-subgraph model of its own, then run through a real XNNPACK interpreter
and its execution nodes are read back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter
from ai_edge_litert.tools import flatbuffer_utils

# Sizes substituted for dynamic (-1) dimensions before the delegate is applied.
_DYNAMIC_BATCH = 1
_DYNAMIC_SIZE = 64


@dataclass(frozen=True)
class Partitioning:
    """``partitions``: XNNPACK delegate nodes; ``fully_delegated``: no op runs outside them;
    ``outside``: op types seen running outside the delegate (those feeding it or the outputs)."""

    partitions: int
    fully_delegated: bool
    outside: tuple[str, ...] = ()

    @property
    def single(self) -> bool:
        """The whole graph is one XNNPACK partition."""
        return self.partitions == 1 and self.fully_delegated


def xnnpack_partitions(path: str | Path) -> dict[str, Partitioning]:
    """Partitioning of each signature (or ``"main"`` for a signature-less file) under XNNPACK."""
    model = flatbuffer_utils.read_model(Path(path))
    sigs = model.signatureDefs or []
    if not sigs:
        return {"main": _partitioning(model, 0, None)}
    return {sig.signatureKey.decode(): _partitioning(model, sig.subgraphIndex, sig) for sig in sigs}


def _partitioning(model: schema.ModelT, subgraph: int, sig: schema.SignatureDefT | None) -> Partitioning:
    sub = model.subgraphs[subgraph]
    const = {i for i, t in enumerate(sub.tensors) if _has_data(model, t.buffer)}
    # A copy holding only this subgraph (and its signature, re-pointed at index 0).
    # Copying the subgraph list keeps the shared buffers and operator codes valid.
    one = schema.ModelT()
    for attr in ("version", "operatorCodes", "description", "buffers", "metadataBuffer", "metadata"):
        setattr(one, attr, getattr(model, attr))
    one.subgraphs = [sub]
    if sig is not None:
        copy = schema.SignatureDefT()
        copy.inputs, copy.outputs, copy.signatureKey, copy.subgraphIndex = sig.inputs, sig.outputs, sig.signatureKey, 0
        one.signatureDefs = [copy]
    it = Interpreter(model_content=bytes(flatbuffer_utils.convert_object_to_bytearray(one)), num_threads=1)
    for d in it.get_input_details():
        sig_shape = d["shape_signature"]
        if (sig_shape < 0).any():
            shape = [(_DYNAMIC_BATCH if i == 0 else _DYNAMIC_SIZE) if s < 0 else int(s)
                     for i, s in enumerate(sig_shape)]
            it.resize_tensor_input(d["index"], shape)
    it.allocate_tensors()
    wrapper = it._interpreter  # noqa: SLF001 - node introspection is only on the wrapper
    delegates = [i for i in range(len(sub.operators), wrapper.NumNodes()) if wrapper.NodeName(i) == "DELEGATE"]
    produced = {int(t) for i in delegates for t in wrapper.NodeOutputs(i)}
    consumed = {int(t) for i in delegates for t in wrapper.NodeInputs(i) if t >= 0}
    graph_in, graph_out = {int(t) for t in sub.inputs}, {int(t) for t in sub.outputs}
    # Every graph output comes from a delegate node, and delegate nodes read only
    # graph inputs, constants and each other: then no op ran outside them.
    stray = (consumed - graph_in - const - produced) | (graph_out - produced)
    outside = sorted({flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) or "?"
                      for op in sub.operators if stray & {int(t) for t in op.outputs}})
    return Partitioning(len(delegates), bool(delegates) and not stray, tuple(outside))


def _has_data(model: schema.ModelT, buffer: int) -> bool:
    if buffer <= 0 or buffer >= len(model.buffers):
        return False
    buf = model.buffers[buffer]
    data = buf.data
    return (data is not None and np.size(data) > 0) or bool(getattr(buf, "offset", 0))
