"""glibc allocator setting: frame-sized buffers freed on a worker thread are reused, not faulted back in."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

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
