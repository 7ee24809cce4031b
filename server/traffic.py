"""Traffic splits for A/B tests: which loaded version of a model a new stream or call gets.

A split maps versions to whole percentages summing to 100.  :meth:`TrafficSplit.choose` draws a
version by weight for each new stream (kept for the stream's whole life) and each unary call, so
over ``n`` assignments a version of weight ``p`` gets Binomial(n, p/100) of them.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping

from stylecast.server.errors import InvalidSplit


def check_split(weights: Mapping[str, int], installed: Iterable[str], model: str) -> dict[str, int]:
    """``weights`` (version → percent) as a dict, if every version is ``installed``, no weight is
    negative or above 100 and they sum to 100; raises :class:`InvalidSplit` saying what to change."""
    installed = sorted(set(installed))
    if not weights:
        raise InvalidSplit(f"a traffic split needs at least one VERSION=PERCENT entry (versions of {model}: "
                           f"{', '.join(installed) or 'none installed'})")
    for version, percent in weights.items():
        if version not in installed:
            raise InvalidSplit(f"version {version!r} of model {model} is not installed here (installed: "
                               f"{', '.join(installed) or 'none'}); upload it first (stylecast models upload)")
        if not 0 <= percent <= 100:
            raise InvalidSplit(f"version {version}: weight {percent} is not a percentage; use 0..100")
    total = sum(weights.values())
    if total != 100:
        shown = ", ".join(f"{v}={p}" for v, p in weights.items())
        raise InvalidSplit(f"weights must sum to 100, got {total} ({shown}); adjust them, e.g. 80 and 20")
    return dict(weights)


class TrafficSplit:
    """Weights of the loaded versions of one model; event loop only."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self.weights: dict[str, int] = {}   # version -> percent; empty = everything to the default version
        self._rng = rng or random.Random()

    def choose(self, candidates: Iterable[str], default: str) -> str:
        """A version drawn by weight among ``candidates`` (the versions taking new traffic);
        ``default`` when none of them has weight."""
        versions = [v for v in candidates if self.weights.get(v, 0) > 0]
        if not versions:
            return default
        if len(versions) == 1:
            return versions[0]
        return self._rng.choices(versions, [self.weights[v] for v in versions])[0]

    def percent(self, version: str, candidates: Iterable[str], default: str) -> int:
        """The share of new traffic ``version`` gets now, in percent (renormalised over ``candidates``)."""
        live = {v: self.weights.get(v, 0) for v in candidates}
        total = sum(live.values())
        if not total:
            return 100 if version == default else 0
        return round(100 * live.get(version, 0) / total)
