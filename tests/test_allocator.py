"""glibc allocator settings: frame-sized buffers freed on a worker thread are reused, not faulted back in;
the server allocates from one arena."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import encoded, exec_serve, picture

from stylecast.client import Client

# Frames' worth of float buffers allocated and freed on a worker thread, as the inference
# threads do; reports the minor page faults the loop cost.
PROGRAM = """
import json, resource, sys, threading
import numpy as np
from stylecast.backends.memory import keep_freed_memory
tuned = sys.argv[1] == "tuned" and keep_freed_memory()

def frames():
    for _ in range(40):
        bufs = [np.ones((1, 512, 512, 3), np.float32) for _ in range(5)]
        del bufs

t = threading.Thread(target=frames)
t.start(); t.join()  # first pass: the arena grows once
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
t = threading.Thread(target=frames)
t.start(); t.join()
print(json.dumps({"tuned": tuned, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def run(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt and ru_minflt are Linux's")
def test_freed_frame_buffers_are_reused_not_faulted_back():
    tuned = run("tuned")
    if not tuned["tuned"]:
        pytest.skip("the C library has no mallopt (not glibc)")
    default = run("default")
    pages_per_pass = 40 * 5 * 512 * 512 * 3 * 4 // 4096
    assert default["faults"] > pages_per_pass // 2  # glibc's default trims and faults them back
    assert tuned["faults"] < default["faults"] // 10


RELEASE = """
import json, threading
import numpy as np
from stylecast.backends.memory import keep_freed_memory, release_free_memory, rss_bytes
keep_freed_memory()

def frames():
    bufs = [np.ones((1, 512, 512, 3), np.float32) for _ in range(8)]  # 24 MiB, kept by the arena once freed
    del bufs

t = threading.Thread(target=frames)
t.start(); t.join()
kept = rss_bytes()
released = release_free_memory()
print(json.dumps({"released": released, "drop": kept - rss_bytes()}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc_trim and /proc are Linux's")
def test_release_free_memory_returns_kept_buffers_to_the_kernel():
    out = subprocess.run([sys.executable, "-c", RELEASE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    if not r["released"] and r["drop"] <= 0:
        pytest.skip("the C library has no malloc_trim (not glibc)")
    assert r["drop"] > 12 << 20  # at least half of the freed frame buffers left the process


def thread_heaps(pid: int) -> list[str]:
    """glibc thread-arena heaps in a process (their ``/proc/PID/maps`` lines): anonymous mappings
    that start on a 64 MiB (HEAP_MAX_SIZE) boundary and fill that much address space,
    readable-writable up to what the arena uses and PROT_NONE above it."""
    lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    maps = []
    for line in lines:
        fields = line.split()
        start, end = (int(x, 16) for x in fields[0].split("-"))
        maps.append((start, end, fields[1], len(fields) > 5))
    heap = 64 << 20
    found = []
    for i, (start, end, perm, named) in enumerate(maps):
        if named or perm != "rw-p" or start % heap:
            continue
        reserved = maps[i + 1] if i + 1 < len(maps) else None
        if end - start == heap or (reserved and reserved[0] == end and reserved[2] == "---p"
                                   and not reserved[3] and reserved[1] == start + heap):
            found.append(lines[i])
    return found


def thread_names(pid: int) -> list[str]:
    return sorted((t / "comm").read_text().strip() for t in Path(f"/proc/{pid}/task").iterdir())


def serve_and_find_heaps(models_dir: Path, tmp_path: Path, arenas: str | None) -> tuple[list[str], list[str]]:
    """``stylecast serve`` (the real exec'd server) with ``malloc_arenas`` from its environment (None: unset),
    after it registered a style and stylized photos on its threads: its thread-arena heaps and its
    threads' names (and it has mapped no library it does not serve with)."""
    env = {k: v for k, v in os.environ.items() if k != "STYLECAST_MALLOC_ARENAS"}
    if arenas is not None:
        env["STYLECAST_MALLOC_ARENAS"] = arenas
    args = ["--metrics-port", "0", "--backend", "litert", "--format", "tflite-fp32", "--workers", "2", "--threads", "1",
            "--models-dir", str(models_dir), "--style-store", f"sqlite:///{tmp_path / f'a{arenas}.db'}"]
    with exec_serve(args, env) as (proc, port):
        with Client(f"127.0.0.1:{port}") as client:
            style = client.register_style(picture(64, 64, seed=5), name="arenas")
            for i in range(6):
                assert client.stylize(encoded(picture(160, 120, seed=i), "JPEG"), style.id).ok
        libraries = Path(f"/proc/{proc.pid}/maps").read_text()
        # nothing the serving path does not use: video is stylized by the client
        for absent in ("libavcodec", "/av/", "/cryptography/", "tensorflow"):
            assert absent not in libraries, absent
        return thread_heaps(proc.pid), thread_names(proc.pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc arenas and /proc are Linux's")
def test_a_litert_server_keeps_its_frames_in_one_malloc_arena(tiny_models_dir, tmp_path):
    """malloc_arenas unset (auto) with LiteRT: gRPC's, the codec and the inference threads allocate
    from glibc's main arena, the one malloc_trim can empty; 8 lets threads have arenas of their own."""
    if not run("tuned")["tuned"]:
        pytest.skip("the C library has no mallopt (not glibc)")
    heaps, threads = serve_and_find_heaps(tiny_models_dir, tmp_path, None)
    assert heaps == [], f"thread arenas {heaps} in a server with threads {threads}"  # which, when it flakes
    heaps, threads = serve_and_find_heaps(tiny_models_dir, tmp_path, "8")
    assert len(heaps) >= 2, threads


TRIM = """
import asyncio, json, sys, threading, time
import numpy as np
from stylecast.backends.memory import keep_freed_memory, rss_bytes
from stylecast.server.app import start
from stylecast.server.config import ServerConfig
keep_freed_memory(arenas=1)  # what `stylecast serve` runs with


def frames():
    bufs = [np.ones((1, 512, 512, 3), np.float32) for _ in range(8)]  # 24 MiB, kept by malloc once freed
    del bufs


async def main():
    config = ServerConfig(port=0, metrics_port=0, backend="litert", format="tflite-fp32", workers=1, threads=1,
                          models_dir=sys.argv[1], style_store="sqlite:///" + sys.argv[2], admin=False,
                          malloc_trim_s=float(sys.argv[3]))
    running = await start(config)
    t = threading.Thread(target=frames)
    t.start(); t.join()
    kept = rss_bytes()
    # a trimming server is watched until its drop shows (up to 20 s on a loaded machine); one that
    # never trims, for five of the other's periods
    until = time.monotonic() + (20.0 if config.malloc_trim_s else 1.5)
    drop = kept - rss_bytes()
    while time.monotonic() < until and not (config.malloc_trim_s and drop > 12 << 20):
        await asyncio.sleep(0.05)
        drop = kept - rss_bytes()
    print(json.dumps({"drop": drop}))
    await running.stop(0)

asyncio.run(main())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc_trim and /proc are Linux's")
@pytest.mark.parametrize("period", ["0.3", "0"])
def test_the_server_hands_kept_memory_back_every_malloc_trim_s(tiny_models_dir, tmp_path, period):
    """Freed frame buffers that glibc keeps go back to the kernel at the next malloc_trim_s tick
    (0 = never: they stay)."""
    if not run("tuned")["tuned"]:
        pytest.skip("the C library has no mallopt (not glibc)")
    out = subprocess.run([sys.executable, "-c", TRIM, str(tiny_models_dir), str(tmp_path / "s.db"), period],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    drop = json.loads(out.stdout.strip().splitlines()[-1])["drop"]
    if period == "0":
        assert drop < 8 << 20  # kept for the next frames
    else:
        assert drop > 12 << 20  # at least half of the freed frame buffers left the process
