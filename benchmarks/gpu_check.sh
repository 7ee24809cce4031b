#!/usr/bin/env bash
# One prepared GPU check, at most 8 minutes (TOTAL_S=480), run from the repository root:
#
#   OUT=/some/folder bash benchmarks/gpu_check.sh          # on a lent GPU machine ($OUT is set there)
#   OUT=/tmp/gpu-dry bash benchmarks/gpu_check.sh          # here, on a CPU: the GPU parts skip, cleanly
#
# (a) prints the GPU, driver, CUDA, ONNX Runtime version and providers, TensorRT;
# (b) installs nothing from a network: stylecast and the few packages the machine lacks come as
#     wheels in .gpu-bundle/ (`make gpu-bundle` fills it; carried with the tree), installed with
#     --no-index into a scratch folder; onnxruntime-gpu, too large to carry at once, may come as
#     parts in .gpu-ort-*/ (see `make gpu-bundle`), joined and checked against its sha256 here;
# (c) runs the `gpu`-marked tests;
# (d) measures the built-in model on every GPU backend ONNX Runtime (and TensorFlow) can run
#     here: frames/s, p50/p99 at 512², 1024², 1080×1920, batch 1/4/8, engine build and warm
#     start from the cache, GPU memory; then served through `stylecast serve` (benchmarks/gpu.py);
# (e) writes env.txt, gpu_tests.txt, gpu_check.json, gpu_check.txt and this log to $OUT.
#
# Every step has its own time limit; a step that fails is recorded and the next one runs.
# On the lent machine: run(command="OUT=$OUT bash benchmarks/gpu_check.sh", carry=[".gpu-bundle"],
# timeout_s=540) after `make gpu-bundle` here; TOTAL_S=… shortens it when transfers took device time.
set -u
TOTAL_S=${TOTAL_S:-480}
OUT=${OUT:-$(mktemp -d /tmp/stylecast-gpu-check.XXXXXX)}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
START=$SECONDS
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python   # a dev checkout: its own venv
BUNDLE=${GPU_BUNDLE:-.gpu-bundle}
SITE=${GPU_SITE:-/tmp/stylecast-site}
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
step() { echo; echo "=== [$((SECONDS - START)) s] $*"; }

step "(a) machine"
{
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,clocks.max.sm --format=csv 2>&1
    nvidia-smi | grep -o "CUDA Version: [0-9.]*"
  else echo "nvidia-smi: not here (no NVIDIA driver)"; fi
  command -v nvcc >/dev/null && nvcc --version | tail -1
  echo "python: $($PY --version 2>&1) at $(command -v "$PY")"
  $PY - <<'EOF'
import importlib.metadata as md
for name in ("onnxruntime", "onnxruntime-gpu", "tensorflow", "tensorrt", "torch", "grpcio", "protobuf", "numpy"):
    try:
        print(f"{name}: {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name}: not installed")
try:
    import onnxruntime as ort
    print("onnxruntime providers:", ", ".join(ort.get_available_providers()))
except ImportError as exc:
    print("onnxruntime: cannot import:", exc)
EOF
} 2>&1 | tee "$OUT/env.txt"

step "(b) packages (no network)"
rm -rf "$SITE"
if $PY -c "import stylecast.server.app" 2>/dev/null; then
  echo "stylecast imports as installed (a dev checkout): nothing to install"
elif ls "$BUNDLE"/*.whl >/dev/null 2>&1; then
  timeout 120 $PY -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" "$BUNDLE"/*.whl \
    && echo "installed into $SITE: $(cd "$BUNDLE" && ls *.whl | tr '\n' ' ')"
  # stylecast from this tree when the machine's setuptools can build it (the bundled wheel may be older)
  if timeout 60 $PY -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --upgrade \
       --target "$SITE" . >/dev/null 2>&1; then echo "stylecast: built from this tree"
  else echo "stylecast: the bundled wheel (this tree needs setuptools >= 77 to build here)"; fi
else
  echo "no $BUNDLE/ wheels and stylecast does not import: run 'make gpu-bundle' and carry $BUNDLE"
fi
if ls .gpu-ort-*/*.part-* >/dev/null 2>&1 && [ -f "$BUNDLE/onnxruntime-gpu.sha256" ]; then
  WHEEL_NAME=$(awk '{print $2}' "$BUNDLE/onnxruntime-gpu.sha256")
  mkdir -p /tmp/stylecast-ort && cat $(ls -1 .gpu-ort-*/*.part-* | sort -V) > "/tmp/stylecast-ort/$WHEEL_NAME"
  if (cd /tmp/stylecast-ort && sha256sum -c "$OLDPWD/$BUNDLE/onnxruntime-gpu.sha256"); then
    $PY -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" "/tmp/stylecast-ort/$WHEEL_NAME" \
      && echo "onnxruntime-gpu from the carried parts: installed in $SITE"
  else
    echo "onnxruntime-gpu parts are incomplete or corrupt: the ORT GPU backends will say they cannot run"
  fi
fi
[ -d "$SITE" ] && export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
if ! $PY -c "import stylecast.server.app, stylecast.backends.nvidia" 2>&1; then
  echo "stylecast cannot be imported here: stopping"; exit 2
fi
$PY -c "import onnxruntime as o; print('onnxruntime now', o.__version__, o.get_available_providers())" \
  | tee -a "$OUT/env.txt"

step "(c) gpu-marked tests"
timeout $((TOTAL_S * 5 / 12)) $PY -m pytest -q -rs -m gpu tests/test_gpu.py 2>&1 | tee "$OUT/gpu_tests.txt" | tail -25
echo "pytest status: ${PIPESTATUS[0]}"

step "(d) measurements"
LEFT=$((TOTAL_S - 30 - (SECONDS - START)))   # stop starting measurements in time for the total
DRY=""; $PY -c "from stylecast.backends import nvidia; raise SystemExit(bool(nvidia.cuda().gpus))" && DRY=--dry-run
timeout $((LEFT + 30)) $PY -m benchmarks.gpu --out "$OUT" --budget-s $((LEFT > 60 ? LEFT - 60 : 1)) $DRY
echo "benchmarks.gpu status: $?"

step "(e) done in $((SECONDS - START)) s; files in $OUT"
ls -l "$OUT"
