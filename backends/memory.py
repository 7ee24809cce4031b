"""Process memory: readings that backends use to estimate their own footprint, and the
allocator setting a frame server wants."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import resource

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8  # glibc <malloc.h>


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (has ``mallopt`` and ``malloc_trim``), else None."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc if libc is not None and libc.mallopt and libc.malloc_trim else None
    except (OSError, AttributeError):
        return None


def keep_freed_memory(trim_bytes: int = 32 << 20, mmap_bytes: int = 32 << 20, arenas: int = 0) -> bool:
    """Let glibc keep freed heap memory for reuse instead of returning it to the kernel.

    Every frame allocates and frees a few frame-sized float arrays on the inference
    threads.  With glibc's defaults their arenas are trimmed after each frame and the
    next frame page-faults the memory back in (measured: 3–5 ms of system CPU per frame
    at 384²–512², about a tenth of the frame).  What is kept is handed back by
    :func:`release_free_memory`.

    ``arenas`` > 0 caps glibc's malloc arenas (``M_ARENA_MAX``; 0 = glibc's default, 8 per
    core): each arena keeps up to ``trim_bytes`` of freed memory of its own, and
    ``malloc_trim`` cannot return the free top of a thread's arena, only of the main one.
    Call it before the process starts threads: threads that already have an arena keep it.
    Returns False where the C library has no ``mallopt`` (not glibc): nothing changes there.
    """
    libc = _glibc()
    if libc is None:
        return False
    kept = bool(libc.mallopt(_M_TRIM_THRESHOLD, trim_bytes)) and bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_bytes))
    return kept and (arenas <= 0 or bool(libc.mallopt(_M_ARENA_MAX, arenas)))


def release_free_memory() -> bool:
    """Return the free memory of every malloc arena to the kernel (glibc ``malloc_trim(0)``);
    for rare events that free a lot (an interpreter dropped), never per frame.  True when
    some memory was released; False also where the C library is not glibc."""
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


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
