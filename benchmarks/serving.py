"""``make bench``: raw backend FPS vs serving over gRPC, side by side, in one run.

1. the backend called in-process (same package, format, size, workers and threads as the server);
2. one stream over gRPC at 384² and 512², raw RGB and JPEG, with ratios to (1);
3. 1, 4 and 16 concurrent streams (EVERY_FRAME), and LIVE at an offered frame rate (drops);
4. a batch-size sweep (max_batch 1/2/4) so the LiteRT default can be chosen;
5. a workers × threads sweep over the CPUs, one stream, so the default layout can be chosen.

The server runs as a subprocess (``stylecast serve``); every client runs in its own
subprocess (``stylecast bench --json``) with pre-encoded frames.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterator

import numpy as np

from stylecast.client.loadgen import synthetic_image
from stylecast.model.preprocess import to_float

CLI = [sys.executable, "-m", "stylecast.client"]
GOALS = {"raw": 0.9, "jpeg": 0.8}


@dataclass(frozen=True)
class Setup:
    models_dir: str
    model: str
    backend: str
    format: str
    threads: int
    workers: int
    seconds: float
    warmup: float


def resolve(args: argparse.Namespace) -> Setup:
    """The package, backend and format the server will pick for these flags."""
    from stylecast.server.config import ServerConfig
    from stylecast.server.packages import choose_backend, find_package, layout

    package = find_package(args.models_dir, args.model)
    config = ServerConfig(backend=args.backend, format=args.format, threads=args.threads, workers=args.workers)
    backend, fmt = choose_backend(config, package)
    workers, threads = layout(config, backend)
    return Setup(args.models_dir, args.model, backend, fmt, threads, workers, args.seconds, args.warmup)


def raw_backend_fps(setup: Setup, size: int, batch: int = 1, seconds: float | None = None) -> tuple[float, float]:
    """(frames per second, CPU ms per frame) of ``backend.stylize`` alone on warmed
    (pre-allocated) interpreters: ``workers`` threads call it at once, as the server's
    inference workers do."""
    from stylecast.backends.base import BackendOptions, create_backend
    from stylecast.server.packages import find_package

    seconds = setup.seconds if seconds is None else seconds
    backend = create_backend(setup.backend)
    backend.load(find_package(setup.models_dir, setup.model),
                 BackendOptions(format=setup.format, threads=setup.threads, workers=setup.workers))
    try:
        backend.warmup([(size, size)])
        style = backend.predict_style(to_float(synthetic_image(256, 1234)[None]))
        styles = np.repeat(style, batch, axis=0)
        content = to_float(np.stack([synthetic_image(size, i) for i in range(batch)]))
        backend.stylize(content, styles)
        frames = [0] * setup.workers
        start, cpu = time.perf_counter(), time.process_time()

        def work(i: int) -> None:
            while time.perf_counter() - start < seconds:
                backend.stylize(content, styles)
                frames[i] += batch

        with ThreadPoolExecutor(setup.workers) as pool:
            list(pool.map(work, range(setup.workers)))
        done = sum(frames)
        return done / (time.perf_counter() - start), (time.process_time() - cpu) / done * 1e3
    finally:
        backend.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_serving(target: str, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with status {proc.returncode}")
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.5)
    raise RuntimeError(f"server at {target} not SERVING after {timeout:.0f} s")


@dataclass(frozen=True)
class Served:
    target: str
    pid: int


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process, all threads (Linux ``/proc``; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU seconds of a process and all its live descendants (Triton runs as a process tree)."""
    total = cpu_seconds(pid)
    if total is None:
        return None
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(int(stat.parent.name))
    todo = list(parents.get(pid, []))
    while todo:
        child = todo.pop()
        total += cpu_seconds(child) or 0.0
        todo += parents.get(child, [])
    return total


@contextmanager
def server(setup: Setup, workdir: Path, **settings: Any) -> Iterator[Served]:
    """``stylecast serve`` in a subprocess; ``settings`` become STYLECAST_* variables."""
    port = free_port()
    cmd = CLI + ["serve", "--port", str(port), "--metrics-port", "0", "--backend", setup.backend,
                 "--format", setup.format, "--threads", str(setup.threads), "--workers", str(setup.workers),
                 "--style-store", f"sqlite:///{workdir / 'styles.db'}"]
    if setup.models_dir:
        cmd += ["--models-dir", setup.models_dir]
    if setup.model:
        cmd += ["--model", setup.model]
    env = dict(os.environ, **{f"STYLECAST_{k.upper()}": str(v) for k, v in settings.items()})
    log = open(workdir / f"server-{port}.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    target = f"127.0.0.1:{port}"
    try:
        wait_serving(target, proc)
        yield Served(target, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def load(srv: Served, setup: Setup, **kw: Any) -> dict[str, Any]:
    """One ``stylecast bench --json`` client process (``kw`` become its flags); see :func:`measure`."""
    cmd = CLI + ["bench", "--json", "--target", srv.target, "--seconds", str(setup.seconds),
                 "--warmup", str(setup.warmup)]
    for key, value in kw.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    return measure(cmd, srv.pid, setup.seconds, setup.warmup)


def measure(cmd: list[str], server_pid: int, seconds: float, warmup: float) -> dict[str, Any]:
    """Run a load client ``cmd`` that measures ``seconds`` after ``warmup`` and prints its figures
    as the last line of JSON (``fps`` at least).  Where ``/proc`` exists, the CPU the server
    (with its child processes) and the client spend per answered frame is sampled inside the
    measured window (which starts after the client's imports, at most ~3 s, and its warm-up)."""
    client = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples = []
    if seconds >= 4:
        for delay in (warmup + 3.0, seconds - 3.0):
            time.sleep(delay)
            samples.append((time.perf_counter(), tree_cpu_seconds(server_pid), cpu_seconds(client.pid)))
    try:
        stdout, stderr = client.communicate(timeout=seconds + warmup + 120)
    except subprocess.TimeoutExpired:
        client.kill()
        raise
    if client.returncode != 0:
        raise RuntimeError(f"client failed: {' '.join(cmd)}\n{stderr}")
    r = json.loads(stdout.strip().splitlines()[-1])
    if len(samples) == 2 and None not in samples[0] + samples[1] and r["fps"] > 0:
        (t0, s0, c0), (t1, s1, c1) = samples
        r["server_cpu_ms"] = (s1 - s0) / (t1 - t0) / r["fps"] * 1e3
        r["client_cpu_ms"] = (c1 - c0) / (t1 - t0) / r["fps"] * 1e3
    return r


def row(label: str, r: dict[str, Any], extra: str = "") -> str:
    cpu = (f"   CPU/frame server {r['server_cpu_ms']:5.1f} + client {r['client_cpu_ms']:4.1f} ms"
           if "server_cpu_ms" in r else "")
    return (f"  {label:<22}{r['fps']:7.1f} FPS   p50 {r['p50_ms']:7.1f} ms   p99 {r['p99_ms']:7.1f} ms   "
            f"infer {r['infer_ms']:6.1f} ms   dropped {r['dropped']:5d}   errors {r['errors']}{cpu}{extra}")


def add_server_options(parser: argparse.ArgumentParser) -> None:
    """The served model and its worker layout, as every serving benchmark takes them."""
    parser.add_argument("--models-dir", default="", help="model packages folder (default: built-in)")
    parser.add_argument("--model", default="")
    parser.add_argument("--backend", default="litert")
    parser.add_argument("--format", default="")
    parser.add_argument("--threads", type=int, default=0, help="threads per worker (0: the server's choice)")
    parser.add_argument("--workers", type=int, default=0, help="inference workers (0: the server's choice)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_server_options(parser)
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds per scenario")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--live-fps", type=float, default=30.0, help="offered FPS per LIVE stream")
    parser.add_argument("--sizes", default="384,512")
    parser.add_argument("--json-out", default="", help="also write all figures to this JSON file")
    args = parser.parse_args(argv)
    from stylecast.backends.memory import keep_freed_memory
    from stylecast.server.errors import StylecastError

    keep_freed_memory()  # the allocator setting `stylecast serve` runs with, for a like-for-like raw figure

    try:
        setup = resolve(args)
    except StylecastError as exc:
        print(f"benchmark: {exc} (serve another package with --models-dir DIR)", file=sys.stderr)
        return 2
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict[str, Any] = {"setup": setup.__dict__}
    print(f"stylecast serving benchmark: backend {setup.backend} ({setup.format}), {setup.workers} worker(s) x "
          f"{setup.threads} thread(s), "
          f"{os.cpu_count()} CPUs, {setup.seconds:g} s per scenario")

    print(f"\n[1] raw backend (in-process, warmed interpreters, {setup.workers} worker(s) x {setup.threads} "
          f"thread(s))")
    raw: dict[int, list[float]] = {}
    for size in sizes:
        fps, cpu = raw_backend_fps(setup, size)
        raw[size] = [fps]
        print(f"  {size}x{size}  batch 1{fps:10.1f} FPS   CPU/frame {cpu:5.1f} ms")
    for batch in (2, 4):
        fps, _ = raw_backend_fps(setup, sizes[0], batch)
        results[f"raw_batch{batch}_{sizes[0]}"] = fps
        print(f"  {sizes[0]}x{sizes[0]}  batch {batch}{fps:10.1f} FPS  ({fps / raw[sizes[0]][0]:.2f}x batch 1)")

    with tempfile.TemporaryDirectory(prefix="stylecast-bench-") as tmp:
        workdir = Path(tmp)
        with server(setup, workdir, max_batch=1) as srv:
            print("\n[2] one stream over gRPC vs raw backend; the raw figure is re-measured after each stream and\n"
                  "    the ratio taken to the mean of the runs on either side (the machine's speed drifts)")
            single = {}
            for size in sizes:
                for wire in ("raw", "jpeg"):
                    before = raw[size][-1]
                    r = single[f"{size}-{wire}"] = load(srv, setup, size=size, wire=wire)
                    fps, cpu = raw_backend_fps(setup, size)
                    raw[size].append(fps)
                    ratio = r["fps"] / ((before + raw[size][-1]) / 2)
                    r["ratio"] = ratio
                    mark = "ok" if ratio >= GOALS[wire] else "BELOW GOAL"
                    print(row(f"{size}x{size} {wire}", r,
                              f"   raw {before:.1f}/{fps:.1f} FPS, {cpu:.1f} ms CPU   ratio {ratio:.2f} "
                              f"(goal {GOALS[wire]:.1f}: {mark})"))
            results["single"], results["raw"] = single, raw

            size = sizes[0]
            print(f"\n[3] concurrent streams, {size}x{size} raw, EVERY_FRAME (aggregate)")
            conc = {1: single[f"{size}-raw"]}
            for n in (4, 16):
                conc[n] = load(srv, setup, size=size, wire="raw", streams=n)
            for n, r in conc.items():
                print(row(f"{n:2d} stream(s)", r))
            print(f"    LIVE, {args.live_fps:g} FPS offered per stream")
            live = {}
            interval = 1e3 / args.live_fps
            for n, s in [(1, s) for s in sizes] + [(4, size), (16, size)]:
                r = live[f"{n}-{s}"] = load(srv, setup, size=s, wire="raw", streams=n, mode="live", fps=args.live_fps)
                print(row(f"{n:2d} stream(s) {s}x{s}", r, f"   ({r['dropped'] / max(r['answered'], 1):.0%} of answers; "
                                                          f"p99 {r['p99_ms'] / interval:.1f} frame intervals)"))
            results["concurrent"], results["live"] = conc, live

        print(f"\n[4] batch sweep, 4 streams {size}x{size} raw (max_wait 5 ms)")
        sweep = {}
        for batch in (1, 2, 4):
            with server(setup, workdir, max_batch=batch, max_wait_ms=5 if batch > 1 else 0) as srv:
                sweep[batch] = load(srv, setup, size=size, wire="raw", streams=4)
            print(row(f"max_batch {batch}", sweep[batch]))
        best = max(sweep, key=lambda b: sweep[b]["fps"])
        print(f"  best max_batch for {setup.backend}: {best}")
        results["batch_sweep"] = sweep

        cpus = os.cpu_count() or 1
        layouts = sorted({(1, cpus), (cpus, 1), (setup.workers, setup.threads)})
        print(f"\n[5] workers x threads, 1 stream {size}x{size} raw (raw backend measured alongside)")
        results["layouts"] = {}
        for workers, threads in layouts:
            alt = replace(setup, workers=workers, threads=threads)
            with server(alt, workdir) as srv:
                r = load(srv, alt, size=size, wire="raw")
            base, _ = raw_backend_fps(alt, size)
            results["layouts"][f"{workers}x{threads}"] = {"served": r, "raw": base}
            print(row(f"{workers} worker(s) x {threads}", r, f"   raw {base:.1f}"))

    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
