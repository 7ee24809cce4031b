"""Train the v5 student on a lent GPU (``make train-gpu``): Keras on PyTorch, fixed time.

The GPU machine has PyTorch and CUDA but no TensorFlow, no Keras and no network, takes
at most 64 MiB of carried files and 15 minutes of device time.  So this runs in two
halves:

``python -m stylecast.model.gpu pack`` (here) fills the ignored folder ``runs/gpu/``:

- ``pack/``: the recipe's pack (teacher graph from ``../shared/assets`` ≈ 0.45 MB, the
  training photos as JPEG ≈ 24 MB, the style-vector bank), built if missing;
- ``ckpt/``: the latest checkpoint of the run being continued (``--from``), if any;
- ``wheels/``: Keras and the two of its dependencies the GPU image lacks (namex, optree;
  downloaded once for CPython 3.12 x86-64 with pip);
- ``run.sh``: the command for the device: ``sh runs/gpu/run.sh MINUTES [recipe args]``; it
  trains the packed checkpoint's candidate (``--spec`` or ``SPEC=`` to choose another).

Then the device tool runs ``sh runs/gpu/run.sh 11 --pairs 16 --crop 256 --e2e-steps 20000``
with ``carry: ["runs/gpu"]``: it installs the wheels into /tmp, makes ``stylecast.model``
importable without installing the project, copies ``ckpt/`` to ``$OUT/ckpt`` and trains
there with ``KERAS_BACKEND=torch`` for the given minutes (bigger batches and crops than
the CPU run), so ``$OUT/ckpt`` comes back holding the checkpoint and its curve.  Copy it to
``runs/v5/<spec>/`` to resume here or to export.

``dry-run`` runs ``run.sh`` here instead (CPU, ``KERAS_BACKEND=torch``, tiny
batches), with ``$OUT`` a temporary folder: the whole path short of the GPU.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GPU_DIR = REPO / "runs" / "gpu"
WHEELS = ("keras==3.15.1", "namex", "optree")
CHECKPOINT_FILES = ("student.weights.h5", "student.json", "optimizer_blocks.npz", "optimizer_e2e.npz", "log.csv")

RUN_SH = r"""#!/bin/sh
# On the GPU machine, from the repository root: sh runs/gpu/run.sh MINUTES [recipe args...]
# Written by `python -m stylecast.model.gpu pack`; trains with Keras on PyTorch into $OUT/ckpt.
set -eu
MINUTES=${1:?minutes}; shift
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
DEPS=${DEPS:-/tmp/stylecast-gpu-deps}
if ! python3 -c "import keras" 2>/dev/null; then
  python3 -m pip install -q --no-index --find-links "$HERE/wheels" --target "$DEPS" keras
fi
SHIM=$(mktemp -d)
mkdir -p "$SHIM/stylecast"
cp "$REPO/protos/stylecast/__init__.py" "$SHIM/stylecast/__init__.py"
ln -s "$REPO/model" "$SHIM/stylecast/model"
mkdir -p "$OUT/ckpt"
if [ -d "$HERE/ckpt" ]; then cp "$HERE"/ckpt/* "$OUT/ckpt/"; fi
export PYTHONPATH="$SHIM:$DEPS:${PYTHONPATH:-}" KERAS_BACKEND=torch PYTHONUNBUFFERED=1
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
exec python3 -m stylecast.model.recipe --pack "$HERE/pack" --out "$OUT/ckpt" --minutes "$MINUTES" \
  --spec "${SPEC:-@SPEC@}" --save-every 200 "$@"
"""


def pack(spec_dir: Path | None, assets: Path | None, seed: int, spec: str | None = None) -> None:
    """Fill ``runs/gpu/`` (see the module docstring).  ``run.sh`` trains ``spec`` (a
    :data:`networks.CANDIDATES` name): by default the packed checkpoint's, else ``rt3``."""
    import json  # noqa: PLC0415

    from stylecast.model import data  # noqa: PLC0415
    from stylecast.model.recipe import build_pack  # noqa: PLC0415

    GPU_DIR.mkdir(parents=True, exist_ok=True)
    local_pack = REPO / "runs" / "v5" / "pack"
    if not (local_pack / "teacher.npz").exists():
        build_pack(assets or data.assets_dir(), local_pack, seed)
    shutil.copytree(local_pack, GPU_DIR / "pack", dirs_exist_ok=True)
    shutil.rmtree(GPU_DIR / "ckpt", ignore_errors=True)  # no file left from another run
    if spec_dir is not None and (spec_dir / "student.json").exists():
        spec = spec or json.loads((spec_dir / "student.json").read_text())["spec"]
        (GPU_DIR / "ckpt").mkdir()
        for name in CHECKPOINT_FILES:
            if (spec_dir / name).exists():
                shutil.copy(spec_dir / name, GPU_DIR / "ckpt" / name)
    wheels = GPU_DIR / "wheels"
    if not any(wheels.glob("keras-*.whl")):
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "--python-version", "3.12", "--platform", "manylinux_2_28_x86_64",
                        "--platform", "manylinux2014_x86_64", "-d", str(wheels), *WHEELS], check=True)
    spec = spec or "rt3"
    (GPU_DIR / "run.sh").write_text(RUN_SH.replace("@SPEC@", spec))
    size = sum(f.stat().st_size for f in GPU_DIR.rglob("*") if f.is_file())
    print(f"{GPU_DIR}: {size / 2**20:.1f} MiB to carry (limit 64 MiB)")
    print(f'device ({spec}): run(command="sh runs/gpu/run.sh 11 --pairs 16 --crop 256 --e2e-steps 20000", '
          'carry=["runs/gpu"], timeout_s=780)')


def dry_run(minutes: float, extra: list[str]) -> Path:
    """Run ``run.sh`` here on the CPU with ``KERAS_BACKEND=torch``; returns the $OUT used."""
    out = Path(tempfile.mkdtemp(prefix="stylecast-gpu-out-"))
    # python3 is this venv's (Keras and torch importable): run.sh then skips the wheel install.
    env = {**os.environ, "OUT": str(out), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    subprocess.run(["sh", str(GPU_DIR / "run.sh"), str(minutes), *extra], env=env, check=True, cwd=REPO)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=["pack", "dry-run"])
    ap.add_argument("--from", dest="spec_dir", type=Path, default=REPO / "runs" / "v5" / "rt3",
                    help="checkpoint folder to continue (copied into runs/gpu/ckpt)")
    ap.add_argument("--spec", default=None, help="the candidate run.sh trains (default: the checkpoint's, else rt3)")
    ap.add_argument("--assets", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--minutes", type=float, default=1.0, help="dry-run length")
    args, extra = ap.parse_known_args(argv)
    if args.action == "pack":
        pack(args.spec_dir, args.assets, args.seed, args.spec)
    else:
        out = dry_run(args.minutes, extra or ["--pairs", "1", "--crop", "64"])
        print(f"dry run wrote {sorted(p.name for p in (out / 'ckpt').iterdir())} to {out / 'ckpt'}")


if __name__ == "__main__":
    main()
