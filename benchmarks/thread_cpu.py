"""``make bench-threads``: where a served frame's CPU goes, by server thread.

``stylecast serve`` streams frames to ``stylecast bench`` clients (own processes); per-thread CPU
of the server is read from ``/proc/PID/task`` over the measured window and divided by the frames
answered in it: the event loop (the main thread: gRPC's reads and writes, protobuf, the stream's
Python), gRPC core's own threads, and the rest (inference workers, codec threads: Python does
not name OS threads, so they are told apart only from the event loop and gRPC core).  Issue 15's event-loop
figure (goal ≤ 1.2 ms per 384² raw frame) is the first line.  Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.serving import CLI, add_server_options, resolve, server

# gRPC core names its threads (``comm``); Python's threads (inference, codecs, gRPC's poller,
# the store) and XNNPACK's pool carry the process name; the main thread is the event loop.
GRPC_THREADS = ("grpc", "event_engine", "lifeguard", "default-executo")


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """Thread id → (name, user + system CPU seconds) of every thread of ``pid``."""
    hz = os.sysconf("SC_CLK_TCK")
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            out[int(task.name)] = ((task / "comm").read_text().strip(), (int(fields[11]) + int(fields[12])) / hz)
        except (OSError, ValueError):
            pass  # the thread ended
    return out


def role(pid: int, tid: int, name: str) -> str:
    if tid == pid:
        return "event loop"
    return "gRPC core threads" if name.startswith(GRPC_THREADS) else "inference and other threads"


def run(target: str, pid: int, size: int, wire: str, streams: int, seconds: float) -> dict:
    """One measured window; CPU ms per answered frame by role, frames/s."""
    warmup = 3.0
    cmd = CLI + ["bench", "--json", "--target", target, "--seconds", str(seconds), "--warmup", str(warmup),
                 "--size", str(size), "--wire", wire, "--streams", str(streams)]
    client = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    time.sleep(warmup + 1.0)
    t0, before = time.perf_counter(), thread_cpu(pid)
    time.sleep(seconds - 2.0)
    t1, after = time.perf_counter(), thread_cpu(pid)
    out, _ = client.communicate(timeout=seconds + 120)
    report = json.loads(out.strip().splitlines()[-1])
    frames = report["fps"] * (t1 - t0)
    ms: dict[str, float] = {}
    for tid, (name, cpu) in after.items():
        r = role(pid, tid, name)
        ms[r] = ms.get(r, 0.0) + (cpu - before.get(tid, (name, 0.0))[1]) / max(frames, 1) * 1e3
    return {"fps": report["fps"], "ms": ms}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_server_options(parser)
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--wire", default="raw", choices=("raw", "jpeg"))
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per round")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    args.warmup = 0.0
    setup = resolve(args)
    print(f"server CPU per answered frame by thread: {args.size}² {args.wire}, {args.streams} stream(s), "
          f"{setup.backend} {setup.format}, {setup.workers} worker(s) x {setup.threads} thread(s), "
          f"{args.seconds:g} s x {args.rounds} rounds, load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="stylecast-threads-") as tmp, server(setup, Path(tmp)) as srv:
        for n in range(args.rounds):
            r = run(srv.target, srv.pid, args.size, args.wire, args.streams, args.seconds)
            parts = ", ".join(f"{k} {v:.2f}" for k, v in sorted(r["ms"].items(), key=lambda kv: -kv[1]))
            print(f"  round {n + 1}: {r['fps']:.1f} frames/s; ms per frame: {parts}; "
                  f"total {sum(r['ms'].values()):.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
