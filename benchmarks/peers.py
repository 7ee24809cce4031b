"""``make bench-peers``: stylecast next to NVIDIA Triton (PyTriton) on the same model, side by side.

Both servers run the same artifact of the same package with the same worker layout
(``workers`` single-threaded LiteRT interpreters), the same uint8↔float conversions and
codecs (Triton's Python model calls stylecast's own functions: see ``peer_triton.py``), and
answer the same frames over gRPC streams with 16 frames in flight per stream.  Each scenario
(one and four streams, raw RGB and JPEG, ``--seconds`` each) runs on one server, then at once
on the other, the order alternating between scenarios and rounds (ABBA): the machine's speed
drifts, and each pair of figures shares its state.  Both servers stay up throughout (an idle
server costs nothing).  The plain inference loop (``backend.stylize`` in-process,
warmed, same layout) is measured at the start of every round and at the end.

Printed per scenario: frames/s, p50/p99 latency from send to answer, server CPU ms per frame
(every process of the server, sampled inside the measured window), and the ratios
stylecast ÷ Triton and each ÷ the plain loop.  Triton runs in its own virtual environment
(``--peer-python``, made by ``make bench-peers``): it is not a project dependency.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.serving import (CLI, Served, Setup, add_server_options, free_port, measure, raw_backend_fps, resolve,
                                server)
from stylecast.client.loadgen import encode_frames, synthetic_image

PEER_SCRIPT = Path(__file__).with_name("peer_triton.py")
STYLE_SEED = 1234  # the style image `stylecast bench` registers (loadgen.run_load)
NAMES = ("stylecast", "triton")


def write_inputs(folder: Path, size: int) -> None:
    """The frames ``stylecast bench`` sends (raw and JPEG) and its style image, as files."""
    np.save(folder / "style.npy", synthetic_image(256, STYLE_SEED))
    np.save(folder / f"frames-{size}-raw.npy",
            np.stack([np.frombuffer(f.data, np.uint8).reshape(size, size, 3) for f in encode_frames(size, "raw")]))
    for i, f in enumerate(encode_frames(size, "jpeg")):
        (folder / f"frames-{size}-jpeg-{i}.jpg").write_bytes(f.data)


def wait_triton(proc: subprocess.Popen, log: Path, timeout: float = 300.0) -> None:
    """Until the serve script says both models are bound (Triton loaded them)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"Triton exited with status {proc.returncode}; log:\n{log.read_text()[-4000:]}")
        if "serving\n" in log.read_text():
            return
        time.sleep(0.5)
    raise RuntimeError(f"Triton not ready after {timeout:.0f} s; log:\n{log.read_text()[-4000:]}")


@contextmanager
def triton(setup: Setup, peer_python: str, workdir: Path, size: int, attempts: int = 3) -> Iterator[Served]:
    """PyTriton serving the same artifact in a subprocess of the peers' interpreter.

    Started up to ``attempts`` times: PyTriton's second model instance fetches its config from
    the first one's handshake socket within 1 s, which a loaded machine can miss."""
    from stylecast.server.packages import find_package

    package = find_package(setup.models_dir, setup.model)
    for attempt in range(1, attempts + 1):
        ports = {name: free_port() for name in ("grpc", "http", "metrics")}
        cmd = [peer_python, str(PEER_SCRIPT), "serve", "--package", str(package.path), "--format", setup.format,
               "--workers", str(setup.workers), "--threads", str(setup.threads),
               "--style", str(workdir / "style.npy"), "--sizes", str(size)]
        for name, port in ports.items():
            cmd += [f"--{name}-port", str(port)]
        log_path = workdir / f"triton-{ports['grpc']}.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            try:
                wait_triton(proc, log_path)
            except RuntimeError as exc:
                if attempt == attempts:
                    raise
                print(f"  (Triton failed to start, attempt {attempt}: {str(exc).splitlines()[0]}; retrying)")
                continue
            yield Served(f"127.0.0.1:{ports['grpc']}", proc.pid)
            return
        finally:
            proc.terminate()  # PyTriton stops tritonserver and its stubs on SIGTERM
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()


def run_scenario(name: str, srv: Served, setup: Setup, peer_python: str, workdir: Path, size: int,
                 wire: str, streams: int) -> dict[str, Any]:
    if name == "stylecast":
        cmd = CLI + ["bench", "--json", "--target", srv.target, "--size", str(size), "--wire", wire,
                     "--streams", str(streams)]
    else:
        cmd = [peer_python, str(PEER_SCRIPT), "load", "--target", srv.target, "--frames", str(workdir),
               "--size", str(size), "--wire", wire, "--streams", str(streams)]
    cmd += ["--seconds", str(setup.seconds), "--warmup", str(setup.warmup)]
    return measure(cmd, srv.pid, setup.seconds, setup.warmup)


def mean(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return sum(values) / len(values) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--peer-python", default=".venv-peers/bin/python",
                        help="interpreter of the venv with nvidia-pytriton (make bench-peers creates it)")
    add_server_options(parser)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per scenario")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=2, help="rounds; the order of the servers alternates")
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--streams", default="1,4")
    parser.add_argument("--wires", default="raw,jpeg")
    parser.add_argument("--json-out", default="", help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    from stylecast.backends.memory import keep_freed_memory

    if not Path(args.peer_python).exists():
        print(f"bench-peers: no {args.peer_python}; `make bench-peers` creates the peers' venv", file=sys.stderr)
        return 2
    keep_freed_memory()  # as `stylecast serve` runs, for a like-for-like plain loop
    setup = resolve(args)
    if setup.backend != "litert":
        print(f"bench-peers: Triton's model here runs LiteRT; got backend {setup.backend}", file=sys.stderr)
        return 2
    size = args.size
    scenarios = [(n, w) for n in (int(s) for s in args.streams.split(",")) for w in args.wires.split(",")]
    load1 = os.getloadavg()[0]
    print(f"stylecast vs Triton (PyTriton), {setup.format} at {size}x{size}, {setup.workers} worker(s) x "
          f"{setup.threads} thread(s), {os.cpu_count()} CPUs, {setup.seconds:g} s per scenario, "
          f"{args.rounds} rounds (load average {load1:.2f} at start)")
    plain: list[float] = []
    plain_cpu: list[float] = []
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {n: {} for n in NAMES}

    def plain_loop() -> None:
        fps, cpu = raw_backend_fps(setup, size, seconds=min(10.0, setup.seconds))
        plain.append(fps)
        plain_cpu.append(cpu)
        print(f"  plain inference loop  {fps:6.1f} frames/s   CPU {cpu:5.1f} ms/frame")

    with tempfile.TemporaryDirectory(prefix="stylecast-peers-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        write_inputs(workdir, size)
        servers = {"stylecast": stack.enter_context(server(setup, workdir)),
                   "triton": stack.enter_context(triton(setup, args.peer_python, workdir, size))}
        for rnd in range(args.rounds):
            print(f"\nround {rnd + 1}")
            plain_loop()
            for i, (streams, wire) in enumerate(scenarios):
                # ABBA: each scenario's pair runs back to back, its order alternating.
                for name in (NAMES if (rnd + i) % 2 == 0 else NAMES[::-1]):
                    r = run_scenario(name, servers[name], setup, args.peer_python, workdir, size, wire, streams)
                    runs[name].setdefault(f"{streams}-{wire}", []).append(r)
                    print(f"  {name:<9} {streams} stream(s) {wire:<4} {r['fps']:6.1f} frames/s   "
                          f"p50 {r['p50_ms']:6.1f} ms   p99 {r['p99_ms']:6.1f} ms   "
                          f"server CPU {r.get('server_cpu_ms', float('nan')):5.1f} ms/frame   "
                          f"errors {r['errors']}")
        print()
        plain_loop()

    base, base_cpu = mean(plain), mean(plain_cpu)
    print(f"\nmeans over {args.rounds} rounds; plain loop {base:.1f} frames/s, {base_cpu:.1f} ms CPU per "
          f"frame (load average {os.getloadavg()[0]:.2f} at end)")
    header = (f"  {'scenario':<18}{'server':<11}{'frames/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'CPU ms/fr':>10}"
              f"{'÷ plain':>9}{'CPU ÷ plain':>12}   stylecast ÷ Triton")
    print(header)
    table: dict[str, Any] = {}
    for streams, wire in scenarios:
        key = f"{streams}-{wire}"
        agg = {n: {f: mean([r.get(f, float("nan")) for r in runs[n][key]])
                   for f in ("fps", "p50_ms", "p99_ms", "server_cpu_ms")} for n in NAMES}
        fps_ratio = agg["stylecast"]["fps"] / agg["triton"]["fps"]
        cpu_ratio = agg["stylecast"]["server_cpu_ms"] / agg["triton"]["server_cpu_ms"]
        table[key] = {**agg, "fps_ratio": fps_ratio, "cpu_ratio": cpu_ratio}
        for n in NAMES:
            a = agg[n]
            tail = (f"   frames/s {fps_ratio:.2f}x, CPU/frame {cpu_ratio:.2f}x" if n == "stylecast" else "")
            label = f"{streams} stream(s) {wire}" if n == "stylecast" else ""
            print(f"  {label:<18}{n:<11}{a['fps']:9.1f}{a['p50_ms']:8.1f}{a['p99_ms']:8.1f}"
                  f"{a['server_cpu_ms']:10.1f}{a['fps'] / base:9.2f}{a['server_cpu_ms'] / base_cpu:12.2f}{tail}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(
            {"setup": setup.__dict__, "plain": plain, "plain_cpu_ms": plain_cpu, "runs": runs, "table": table},
            indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
