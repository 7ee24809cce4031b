"""Speed of the built-in model vs the Magenta teacher through LiteRT (``make bench-model``).

Both run as raw pre-allocated interpreters with the same thread count; rounds are
interleaved so that machine noise hits both alike.  Prints absolute milliseconds,
frames per second and the ratio to the teacher.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from stylecast.backends.package import load_package, locate_package
from stylecast.model import BUILTIN_DIR, BUILTIN_MODEL, data
from stylecast.model.teacher import TRANSFER_FILE


def _prepared(path: Path, h: int, w: int, threads: int, content: str, style: str):
    """An interpreter allocated for 1×h×w×3, inputs set, ready to invoke()."""
    it = Interpreter(model_path=str(path), num_threads=threads)
    names = {d["name"]: d for d in it.get_input_details()}
    c = next(d for n, d in names.items() if content in n)
    s = next(d for n, d in names.items() if style in n)
    if list(c["shape"][1:3]) != [h, w]:
        it.resize_tensor_input(c["index"], [1, h, w, 3])
        it.resize_tensor_input(s["index"], [1, int(s["shape"][-1])])
    it.allocate_tensors()
    s = next(d for d in it.get_input_details() if d["index"] == s["index"])
    rng = np.random.default_rng(0)
    it.set_tensor(c["index"], rng.random((1, h, w, 3), np.float32))
    it.set_tensor(s["index"], rng.normal(0, 1, s["shape"]).astype(np.float32))
    it.invoke()
    return it


def _time(it, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        it.invoke()
        out.append(time.perf_counter() - t)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--package", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--per-round", type=int, default=10)
    ap.add_argument("--assets", type=Path, default=None)
    args = ap.parse_args(argv)
    pkg = load_package(args.package) if args.package else locate_package(BUILTIN_DIR, BUILTIN_MODEL)
    teacher_file = (args.assets or data.assets_dir()) / "models" / "magenta" / TRANSFER_FILE
    cases = {}
    if teacher_file.exists():
        cases["teacher int8 384x384"] = _prepared(teacher_file, 384, 384, args.threads, "content_image",
                                                  "mobilenet_conv")
    else:
        print(f"teacher not found at {teacher_file}: built-in figures only")
    for fmt in ("tflite-int8", "tflite-fp16", "tflite-fp32"):
        if fmt not in pkg.artifacts:
            continue
        path = pkg.endpoint_path(fmt, "stylize")
        sizes = [(384, 384), (512, 512), (720, 1280)] if fmt == "tflite-int8" else [(384, 384), (512, 512)]
        for h, w in sizes:
            cases[f"built-in {fmt[7:]} {w}x{h}"] = _prepared(path, h, w, args.threads, "content", "style")
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.rounds):  # interleaved rounds: noise hits every case alike
        for k, it in cases.items():
            times[k] += _time(it, args.per_round)
    print(f"LiteRT + XNNPACK, {args.threads} threads, batch 1, median of {args.rounds * args.per_round} runs")
    print(f"{'case':32s} {'ms':>8s} {'FPS':>8s} {'x teacher FPS':>14s}")
    base = np.median(times["teacher int8 384x384"]) if "teacher int8 384x384" in times else None
    for k, t in times.items():
        ms = float(np.median(t)) * 1000
        ratio = f"{base * 1000 / ms:14.2f}" if base is not None and "384x384" in k else f"{'':14s}"
        print(f"{k:32s} {ms:8.2f} {1000 / ms:8.1f} {ratio}")
    print("goals: built-in int8 384² >= 3x teacher FPS; built-in int8 512² >= 30 FPS")


if __name__ == "__main__":
    main()
