"""Cost of each v5 student candidate before training (``python -m stylecast.model.candidates``).

Untrained weights time the same as trained ones: each candidate is exported to TFLite
fp32 and int8 (weights-only, as the package formats), checked to run as one XNNPACK
partition, and timed through LiteRT at 384² and 512² in interleaved rounds next to the
teacher (int8, 384²) and every built-in package version, so machine noise hits all alike
(``--only`` with no names: the built-in packages alone, side by side).
Prints GMACs, milliseconds, FPS and the ratio to the teacher's frames per second.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from stylecast.model.xnnpack import xnnpack_partitions
from stylecast.model import BUILTIN_DIR, data
from stylecast.model.bench import _prepared, _time
from stylecast.model.networks import CANDIDATES, build_student, count_macs
from stylecast.backends.package import load_package
from stylecast.model.teacher import TRANSFER_FILE

def builtin_versions() -> list[Path]:
    return sorted(p for p in BUILTIN_DIR.glob("*/*") if (p / "manifest.json").is_file())


def main(argv: list[str] | None = None) -> None:
    import keras  # noqa: PLC0415

    from stylecast.model.export import transformer_tflite  # noqa: PLC0415

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--per-round", type=int, default=6)
    ap.add_argument("--only", nargs="*", default=list(CANDIDATES))
    args = ap.parse_args(argv)
    keras.utils.set_random_seed(0)
    cases, macs = {}, {}
    teacher = data.assets_dir() / "models" / "magenta" / TRANSFER_FILE
    if teacher.exists():
        cases["teacher int8 384"] = _prepared(teacher, 384, 384, args.threads, "content_image", "mobilenet_conv")
    for pkg in map(load_package, builtin_versions()):
        for prec in ("int8", "fp32"):
            for s in (384, 512):
                cases[f"{pkg.name}-v{pkg.version} {prec} {s}"] = _prepared(
                    pkg.endpoint_path(f"tflite-{prec}", "stylize"), s, s, args.threads, "content", "style")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only:
            model = build_student(CANDIDATES[name])
            macs[name] = (count_macs(model, 384, 384) / 1e9, count_macs(model, 512, 512) / 1e9)
            for prec in ("int8", "fp32"):
                path = Path(tmp) / f"{name}_{prec}.tflite"
                transformer_tflite(model, path, prec)
                parts = xnnpack_partitions(path)["stylize"]
                if not parts.single:
                    print(f"{name} {prec}: {parts.partitions} XNNPACK partitions, outside: {parts.outside}")
                for s in (384, 512):
                    cases[f"{name} {prec} {s}"] = _prepared(path, s, s, args.threads, "content", "style")
        times: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(args.rounds):
            for k, it in cases.items():
                times[k] += _time(it, args.per_round)
    base = np.median(times["teacher int8 384"]) if "teacher int8 384" in times else None
    print(f"LiteRT + XNNPACK, {args.threads} threads, batch 1, median of {args.rounds * args.per_round} runs, "
          "interleaved")
    print(f"{'case':24s} {'GMACs':>6s} {'ms':>8s} {'FPS':>7s} {'x teacher FPS (384)':>20s}")
    for k, t in times.items():
        ms = float(np.median(t)) * 1000
        name, size = k.split()[0], k.split()[-1]
        g = macs.get(name, (None, None))[0 if size == "384" else 1]
        ratio = f"{base * 1000 / ms:20.2f}" if base is not None and size == "384" else ""
        print(f"{k:24s} {'' if g is None else f'{g:6.2f}':>6s} {ms:8.2f} {1000 / ms:7.1f} {ratio}")


if __name__ == "__main__":
    main()
