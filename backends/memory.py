"""Process memory readings that backends use to estimate their own footprint."""

from __future__ import annotations

import os
import resource


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
