"""Process memory: readings that backends use to estimate their own footprint, and the
allocator setting a frame server wants."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc <malloc.h>


def keep_freed_memory(trim_bytes: int = 256 << 20, mmap_bytes: int = 32 << 20) -> bool:
    """Let glibc keep freed heap memory for reuse instead of returning it to the kernel.

    Every frame allocates and frees a few frame-sized float arrays on the inference
    threads.  With glibc's defaults their arenas are trimmed after each frame and the
    next frame page-faults the memory back in (measured: 3–5 ms of system CPU per frame
    at 384²–512², about a tenth of the frame).  Returns False where the C library has no
    ``mallopt`` (not glibc): nothing changes there.
    """
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        return False
    return bool(mallopt(_M_TRIM_THRESHOLD, trim_bytes)) and bool(mallopt(_M_MMAP_THRESHOLD, mmap_bytes))


def rss_bytes() -> int:
    """Resident set size of this process now (Linux ``/proc``; peak RSS elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class RssGrowth:
    """RSS growth since construction, an estimate of what a backend's load and warmup cost.

    Other threads allocating at the same time inflate it; it never goes below zero.
    """

    def __init__(self) -> None:
        self._base = rss_bytes()
        self.bytes = 0

    def update(self) -> int:
        self.bytes = max(self.bytes, rss_bytes() - self._base, 0)
        return self.bytes
