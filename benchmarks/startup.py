"""``make bench-startup``: from exec of ``stylecast serve`` to the first stylized frame, and to
the last artifact of the load order being active.

An outside harness: the server is a new process (``python -m stylecast.client serve``); this
process polls its port, registers a style, stylizes one image, and reads the server's
``/proc/PID/maps`` at that moment to show whether TensorFlow was loaded on the way.  Then it
watches the model until the last artifact of the load order is active.  Uses the built-in
package when present, else a tiny random test package (exported once, in a subprocess).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stylecast.client import AsyncClient
from stylecast.client.loadgen import synthetic_image
from stylecast.model import BUILTIN_DIR

DEFAULT_ORDER = "litert:tflite-int8,litert:tflite-fp32"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def models_dir(requested: str) -> tuple[Path, str]:
    if requested:
        return Path(requested), "given"
    if any(BUILTIN_DIR.glob("*/*/manifest.json")):
        return BUILTIN_DIR, "built-in"
    cache = Path(tempfile.gettempdir()) / "stylecast-bench-tiny"
    if not any(cache.glob("tiny/*/manifest.json")):
        code = "import sys; from stylecast.model.export import tiny_test_package; tiny_test_package(sys.argv[1])"
        subprocess.run([sys.executable, "-c", code, str(cache)], check=True, capture_output=True)
    return cache, "tiny random test package (the built-in is not committed yet)"


def tensorflow_loaded(pid: int) -> bool:
    """Whether any TensorFlow library is mapped into the process (LiteRT's own libraries are not)."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return "/tensorflow/" in maps or "libtensorflow" in maps


async def first_frame(port: int, start: float, proc: subprocess.Popen) -> tuple[float, float, bool]:
    """Seconds after exec until the port accepts, until a stylized frame is back; TF mapped then?"""
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            await asyncio.sleep(0.005)
    listening = time.perf_counter() - start
    async with AsyncClient(f"127.0.0.1:{port}") as client:
        style = await client.register_style(synthetic_image(256, 1), name="bench")
        result = await client.stylize(synthetic_image(384, 2), style)
        first = time.perf_counter() - start
        assert result.ok
    return listening, first, tensorflow_loaded(proc.pid)


async def settled(port: int, start: float) -> tuple[float, str]:
    """Seconds after exec until nothing is loading, and what serves then."""
    async with AsyncClient(f"127.0.0.1:{port}") as client:
        last = None
        async for info in client.watch_model():
            last = info
        done = time.perf_counter() - start
    active = last.active if last else None
    failed = [f"{a.format}: {a.error}" for a in (last.artifacts if last else ()) if a.state == "failed"]
    if failed:
        raise RuntimeError("; ".join(failed))
    return done, f"{active.backend}:{active.format}" if active else "none"


def one_run(models: Path, order: str, threads: int) -> dict:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "stylecast.client", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--metrics-port", "0", "--models-dir", str(models), "--style-store", f"sqlite:///{tmp}/styles.db",
               "--upload-dir", f"{tmp}/uploads", "--load-order", order, "--threads", str(threads)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("STYLECAST_")}
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            listening, first, tf = asyncio.run(first_frame(port, start, proc))
            last, serving = asyncio.run(settled(port, start))
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=60)
        if proc.returncode not in (0, -15):
            raise RuntimeError(f"server failed ({proc.returncode}):\n{err[-2000:]}")
    return {"listening_s": listening, "first_frame_s": first, "tensorflow_before_first_frame": tf,
            "last_artifact_active_s": last, "serving": serving}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", default="")
    parser.add_argument("--load-order", default=DEFAULT_ORDER)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="threads per worker (0: the server's choice)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    models, which = models_dir(args.models_dir)
    runs = [one_run(models, args.load_order, args.threads) for _ in range(args.runs)]
    summary = {k: statistics.median(r[k] for r in runs)
               for k in ("listening_s", "first_frame_s", "last_artifact_active_s")}
    summary |= {"tensorflow_before_first_frame": any(r["tensorflow_before_first_frame"] for r in runs),
                "serving": runs[-1]["serving"], "models": f"{models} ({which})", "load_order": args.load_order,
                "runs": len(runs)}
    if args.json:
        print(json.dumps({"summary": summary, "runs": runs}))
        return
    print(f"model: {summary['models']}\nload order: {args.load_order}   runs: {len(runs)} (medians)")
    print(f"  port open after exec          {summary['listening_s']:.3f} s")
    print(f"  first stylized frame          {summary['first_frame_s']:.3f} s   (goal < 1.5 s)")
    print(f"  TensorFlow loaded by then     {'YES' if summary['tensorflow_before_first_frame'] else 'no'}")
    print(f"  last preferred artifact active {summary['last_artifact_active_s']:.3f} s   ({summary['serving']})")


if __name__ == "__main__":
    main()
