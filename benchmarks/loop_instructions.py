"""``make bench-loop``: the event loop's instructions per served frame, counted by Valgrind.

CPU time per frame (``make bench-threads``) moves with whatever else the machine runs: on a
shared 2-core machine two runs of the same code differ by 20 %.  This counts instead: the
server (``python -m stylecast.server``, what ``stylecast serve`` execs into) runs under
``valgrind --tool=callgrind --separate-threads=yes``; a client streams ``--frames`` and then
3 × ``--frames`` raw frames (EVERY_FRAME, one stream each, a new connection each), each run
between two ``callgrind_control --dump``.  The main thread's (the event loop's) instructions in
the second run minus the first, divided by the frames between them, is the figure, split by
library: libc (almost all ``memcpy``: Valgrind counts a copy's bytes, so ~1.3 M is three copies of
a 384² frame), libpython (the Python code, asyncio included), gRPC's Cython layer, protobuf.
What it does not count is the kernel (``sendmsg`` of the answer, ``epoll_wait``, waking the
loop): ``make bench-threads`` has that.  Linux with Valgrind only (``make bench-loop`` installs
Debian's ``valgrind`` when missing); about 3 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from benchmarks.serving import free_port, wait_serving

GROUPS = {"libc": "libc.so", "libpython": "libpython", "gRPC (cygrpc)": "cygrpc", "protobuf (upb)": "_upb",
          "asyncio (C)": "_asyncio", "numpy": "numpy"}


async def stream_frames(target: str, frames: int, size: int) -> int:
    """Stream ``frames`` raw size² frames on one EVERY_FRAME stream; → frames stylized."""
    from stylecast.client.aio import AsyncClient
    from stylecast.client.loadgen import encode_frames, synthetic_image

    images = encode_frames(size, "raw")
    async with AsyncClient(target) as client:
        await client.wait_ready()
        style = (await client.register_style(synthetic_image(256, 1234), name="bench")).id

        async def source():
            for i in range(frames):
                yield images[i % len(images)]

        return sum([r.ok async for r in client.stream(source(), style, output="raw")])


def main_thread_instructions(dump: Path) -> Counter[str]:
    """Instructions (Ir) by shared object in one callgrind dump (self cost: calls excluded)."""
    names: dict[str, str] = {}
    out: Counter[str] = Counter()
    obj, after_call = "", False
    for line in dump.read_text().splitlines():
        if line.startswith(("ob=", "cob=")):
            m = re.match(r"c?ob=\((\d+)\)(?: (.*))?", line)
            if m and m.group(2):
                names[m.group(1)] = m.group(2)
            if line.startswith("ob="):
                obj = names.get(m.group(1), line[3:]) if m else line[3:]
        elif line.startswith("calls="):
            after_call = True
        elif line[:1].isdigit() or line[:1] in "+-*":
            parts = line.split()
            if len(parts) >= 2:
                if not after_call:
                    out[obj] += int(parts[1])
                after_call = False
    return out


def dump(pid: int, out_prefix: Path) -> Path:
    """Dump callgrind's counters now (they restart from zero); → the main thread's new file."""
    before = set(out_prefix.parent.glob(f"{out_prefix.name}.*-01"))
    subprocess.run(["callgrind_control", "--dump", str(pid)], check=True, capture_output=True)
    for _ in range(100):
        new = set(out_prefix.parent.glob(f"{out_prefix.name}.*-01")) - before
        if new:
            time.sleep(0.5)  # written in one go, but give it a moment
            return new.pop()
        time.sleep(0.2)
    raise RuntimeError("callgrind wrote no dump")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--frames", type=int, default=5, help="frames of the first run (the second: 3x)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            print(f"{tool} not found: install Debian's valgrind (make bench-loop does)", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="stylecast-loop-") as tmp:
        workdir, port = Path(tmp), free_port()
        prefix = workdir / "callgrind.out"
        flags = {"port": port, "metrics_port": 0, "backend": "litert", "format": "tflite-int8", "threads": 1,
                 "workers": args.workers, "style_store": f"sqlite:///{workdir / 'styles.db'}"}
        cmd = ["valgrind", "--tool=callgrind", "--separate-threads=yes", "--dump-instr=no",
               f"--callgrind-out-file={prefix}.%p", sys.executable, "-m", "stylecast.server", json.dumps(flags)]
        with open(workdir / "server.log", "w") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        target = f"127.0.0.1:{port}"
        try:
            wait_serving(target, proc, timeout=600)
            asyncio.run(stream_frames(target, 2, args.size))  # warm: first frames, style cache
            prefix = prefix.with_name(f"{prefix.name}.{proc.pid}")
            runs = []
            for frames in (args.frames, 3 * args.frames):
                dump(proc.pid, prefix)
                answered = asyncio.run(stream_frames(target, frames, args.size))
                if answered != frames:
                    raise RuntimeError(f"{answered} of {frames} frames answered")
                runs.append(main_thread_instructions(dump(proc.pid, prefix)))
        finally:
            proc.terminate()
            proc.wait(60)
    frames = 2 * args.frames
    per_frame = {obj: (runs[1][obj] - runs[0].get(obj, 0)) / frames for obj in runs[1]}
    print(f"event-loop instructions per {args.size}² raw frame (callgrind, {args.workers} worker(s), "
          f"{frames} frames between two runs): {sum(per_frame.values()) / 1e6:.3f} M")
    for group, needle in GROUPS.items():
        n = sum(v for obj, v in per_frame.items() if needle in obj)
        print(f"  {group:<16}{n / 1e3:10.0f} k")
    rest = sum(v for obj, v in per_frame.items() if not any(n in obj for n in GROUPS.values()))
    print(f"  {'other':<16}{rest / 1e3:10.0f} k")
    return 0


if __name__ == "__main__":
    sys.exit(main())
